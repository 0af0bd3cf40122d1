"""The one exception hierarchy of Cairn.

Every error a user can cause or meet derives from :class:`CairnError`. Its message is a
single line meant for a person; the command line prints it on stderr and exits with
``exit_code``. Anything that is not a ``CairnError`` is a bug and is reported as such.
"""


class CairnError(Exception):
    """An error with a one-line, user-facing message."""

    exit_code = 1


class UsageError(CairnError):
    """The command line or a spec given by the user is malformed."""

    exit_code = 2


class FormatError(CairnError):
    """Bytes that should follow one of PBS's formats do not (corrupt or hostile data)."""


class IntegrityError(FormatError):
    """A checksum, digest, signature or authentication tag does not match."""


class CryptError(CairnError):
    """A key is missing, wrong, or cannot be unlocked."""


class StoreError(CairnError):
    """The datastore is missing, malformed, or cannot be written."""


class NotFoundError(CairnError):
    """A group, snapshot, archive or file that was asked for does not exist."""


class LockError(CairnError):
    """Another process holds a lock that this operation needs."""


class SourceError(CairnError):
    """A backup source cannot be read."""
