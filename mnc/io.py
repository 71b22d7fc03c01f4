"""Atomic output: a reader sees the old artifact or the complete new one, never half of one.

Artifacts are staged next to their destination (same file system), verified there, then renamed
into place with their report, under a lock on the destination folder, so that two compiles into
one folder leave each artifact beside the report of the same run. A package directory
(.mlpackage) replaces an old one by two renames; between them, for an instant, neither exists.
Staging folders carry the process id: one left behind by a killed run is removed by the next.
File-system failures (a destination that is a file, a read-only folder, a full disk, a file-size
limit) are bad input naming the path, never a traceback."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from mnc.errors import InputError


def output_error(path: Path, exc: OSError) -> InputError:
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        return InputError(f"cannot write into '{path}': '{blocker}' is a file, not a folder")
    why = {
        errno.EFBIG: "the file-size limit was reached",
        errno.ENOSPC: "the disk is full",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
    }
    return InputError(f"cannot write '{path}': {why.get(exc.errno, exc.strerror or str(exc))}")


def write_atomic(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as any other new file, not mkstemp's owner-only mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise output_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(folder: Path, name: str = "*") -> None:
    """Staging folders in `folder` (of the artifact `name`, or of any) left by runs that were killed:
    their process is gone. Named .NAME.PID.RANDOM.staging."""
    for staging in folder.glob(f".{name}.*.staging"):
        parts = staging.name[: -len(".staging")].rsplit(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) != os.getpid() and not _alive(int(parts[1])):
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged(destination: Path):
    """Yield a path beside `destination` to build the artifact at; it is removed unless installed."""
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(destination.parent, destination.name)
        workdir = Path(
            tempfile.mkdtemp(prefix=f".{destination.name}.{os.getpid()}.", suffix=".staging", dir=destination.parent)
        )
    except OSError as exc:
        raise output_error(destination.parent, exc) from None
    try:
        yield workdir / destination.name
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def install(staged_path: Path, destination: Path) -> None:
    if staged_path.is_dir() and destination.exists():
        old = destination.with_name(f".{destination.name}.old.{os.getpid()}")
        os.replace(destination, old)
        os.replace(staged_path, destination)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    else:
        os.replace(staged_path, destination)


@contextmanager
def destination_lock(folder: Path):
    """Held while an artifact and its report are put in place: concurrent compiles take turns.
    The lock is the folder's own (flock on its descriptor): nothing is left behind."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise output_error(folder, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def publish(staged_path: Path, destination: Path, report_path: Path, report: bytes, companions=()) -> None:
    """Put an artifact, its companions and its report in place as one step of one run. Ctrl-C and
    SIGTERM wait until the renames are done, then take effect (only SIGKILL can come between them)."""
    pause_for_test("verified")
    with destination_lock(destination.parent), _signals_held() as held:
        pause_for_test("installing", until=lambda: held)
        try:
            for companion in companions:
                install(companion, destination.parent / companion.name)
            write_atomic(report_path, report)
            install(staged_path, destination)
        except OSError as exc:
            raise output_error(destination, exc) from None


@contextmanager
def _signals_held():
    """SIGINT and SIGTERM are noted, not acted on, until the block ends; then the handlers they would
    have met are back and the signals are raised again. The handlers are swapped because Python runs
    them in the main thread whichever thread the system delivers a signal to: blocking the signals in
    this thread (pthread_sigmask) does not hold them while other threads exist (a pool's, a runtime's).
    Outside the main thread there is nothing to hold: Python raises a signal's exception only there."""
    held: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not None:  # None: a handler installed outside Python, left alone
                previous[signum] = signal.signal(signum, lambda number, frame: held.append(number))
    try:
        yield held
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


PAUSE_ENV = "MNC_TEST_PAUSE"


def pause_for_test(stage: str, until=lambda: False) -> None:
    """For tests of signals: with MNC_TEST_PAUSE=<stage>, say so on stderr and wait here for a signal
    (until `until()` is true, if the signal is held), so that a test signals a process known to be at
    this stage instead of guessing with a timer. The stages: "verified" (the artifact staged and
    verified, nothing installed) and "installing" (inside publish, signals held). A process nobody
    signals goes on after ten minutes."""
    if os.environ.get(PAUSE_ENV) != stage:
        return
    print(f"mnc: paused at {stage} ({PAUSE_ENV})", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 600
    while not until() and time.monotonic() < deadline:
        time.sleep(0.01)  # wakes often: a signal taken by another thread is acted on between sleeps


def digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256) of a file, or of a package directory's files. A Core ML package's
    Manifest.json is left out: it carries random identifiers that change with every build."""
    if path.is_file():
        data = path.read_bytes()
        return len(data), hashlib.sha256(data).hexdigest()
    h, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel == "Manifest.json":
            continue
        data = f.read_bytes()
        size += len(data)
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return size, h.hexdigest()
