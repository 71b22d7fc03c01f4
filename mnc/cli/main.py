"""`main`: parse, run one command, turn what it raised into a message and an exit code (the table
is in mnc/cli/__init__.py). SIGTERM becomes an exception so that every `finally` runs; an internal
error leaves its traceback in a crash file."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import traceback

from mnc.cli.commands import COMMANDS
from mnc.cli.parser import WORDING, make_parser
from mnc.errors import EXIT_INTERNAL, MncError, wording
from mnc.version import __version__

EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_BROKEN_PIPE = 130, 143, 141


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        with _signals_as_exceptions(), wording(WORDING):
            return COMMANDS[args.command](args)
    except MncError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mnc: interrupted; nothing half-written is left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("mnc: terminated; nothing half-written is left", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # the reader went away (`mnc summary … | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception:  # a bug: one line on the terminal, the traceback in a crash file
        if getattr(args, "debug", False):
            traceback.print_exc()
        else:
            print(_crash_report(argv), file=sys.stderr)
        return EXIT_INTERNAL


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `finally` (staging folders) runs."""


@contextlib.contextmanager
def _signals_as_exceptions():
    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    # A file-size limit makes writes fail with EFBIG (a clear message) instead of killing the process.
    previous_xfsz = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGXFSZ, previous_xfsz)


def _crash_report(argv) -> str:
    exc_type, exc, _ = sys.exc_info()
    text = f"mnc {__version__}\nargv: {sys.argv if argv is None else ['mnc', *argv]}\n\n" + traceback.format_exc()
    try:
        fd, path = tempfile.mkstemp(prefix="mnc-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        where = f"the traceback is in {path}"
    except OSError:
        where = "run with --debug to see the traceback"
    return f"mnc: internal error (a bug in mnc): {exc_type.__name__}: {exc}; {where} (--debug prints it)"


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())
