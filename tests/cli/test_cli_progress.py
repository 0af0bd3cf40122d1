"""Progress: a bar with rate and ETA on a terminal, silence in pipes."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from conftest import MIB, run_cairn


def test_progress_bar_on_terminal_and_silence_in_pipes(store_path, tmp_path):
    image = tmp_path / "p.raw"
    image.write_bytes(os.urandom(24 * MIB))
    args = ["backup", f"p.img:{image}", "--repository", str(store_path), "--backup-id", "progress"]

    piped = run_cairn(*args, "--backup-time", "1000")
    assert "\r" not in piped.stderr and "ETA" not in piped.stderr and "━" not in piped.stderr

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    env.update(COLUMNS="120", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "cairn", *args, "--backup-time", "2000"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        seen += data
    proc.wait(timeout=120)
    os.close(master)
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    bar_lines = [line for line in re.split(r"[\r\n]", text) if "backup p.img" in line]
    assert bar_lines, "no progress bar label on the terminal"
    assert any("━" in line for line in bar_lines)  # the bar itself
    assert any(re.search(r"/s\b", line) for line in bar_lines)  # the rate column
    assert any(re.search(r"\d+:\d\d:\d\d|-:--:--", line) for line in bar_lines)  # the ETA column
