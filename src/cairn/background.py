"""A computation on a thread of its own whose result, or error, is collected later."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background(threading.Thread):
    """Runs ``compute()`` on a daemon thread (a command that fails or does not need the
    result exits at once); :meth:`result` waits for it and raises its error, if any, in the
    caller's thread. (Not a typing.Generic: the entry point uses it before anything imports
    typing.)"""

    def __init__(self, name: str, compute: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self._compute = compute
        self._value: object = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._value = self._compute()
        except BaseException as err:  # raised again by result()
            self._error = err

    def result(self) -> object:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value
