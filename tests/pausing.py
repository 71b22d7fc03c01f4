"""Signalling an mnc process at a known stage, not after a guessed delay. With MNC_TEST_PAUSE=STAGE
(mnc/io.py `pause_for_test`) every mnc process that reaches STAGE says `mnc: paused at STAGE` on
stderr and waits there for a signal; the test sends its signal once it has read that line. The only
limits on time here are for failing a test that hangs, never for deciding where a signal lands."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mnc.io import PAUSE_ENV

PAUSED = "mnc: paused at "
LIMIT_S = 600  # a hung test fails after this; a passing one never waits for it


def start_paused(stage: str, stderr: Path, *args: str) -> subprocess.Popen:
    """`python -m mnc ARGS` in a session of its own, told to pause at `stage`, its stderr in a file.
    SIGINT and SIGTERM start at their defaults, as for a command typed at a terminal: tests run in the
    background by a script inherit SIGINT ignored (a shell without job control ignores it for `cmd &`),
    and Python, like any program, leaves an ignored SIGINT ignored; mnc would not see the Ctrl-C."""
    with open(stderr, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "mnc", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            preexec_fn=_default_signals,
            env={**os.environ, PAUSE_ENV: stage},
        )


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def signal_when_paused(proc: subprocess.Popen, stderr: Path, stage: str, sig: int) -> None:
    deadline = time.monotonic() + LIMIT_S
    while PAUSED + stage not in stderr.read_text():
        assert proc.poll() is None, f"mnc ended (exit {proc.returncode}) before {stage}:\n{stderr.read_text()}"
        assert time.monotonic() < deadline, f"mnc did not reach {stage}:\n{stderr.read_text()}"
        time.sleep(0.05)
    proc.send_signal(sig)


def ended(proc: subprocess.Popen, stderr: Path) -> list[str]:
    """Wait until the process and every process of its session are gone; its stderr lines, the pauses
    left out. Workers end before their parent; one that outlived it is reaped by init, which can take a
    second or two (seen: a zombie for 1.5 s), so a minute is allowed."""
    proc.wait(timeout=LIMIT_S)
    deadline = time.monotonic() + 60
    while _group_alive(proc.pid):
        assert time.monotonic() < deadline, "processes of the run are still there a minute after it ended"
        time.sleep(0.05)
    return [line for line in stderr.read_text().splitlines() if not line.startswith(PAUSED)]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
