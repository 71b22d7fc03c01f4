"""The `mnc` command: parses arguments, calls the library, formats results and exit codes.
It names no target: target choices and target flags come from the registry in mnc/backends.

parser.py is the grammar (`make_parser`), commands.py one function per subcommand, render.py what
they print, main.py `main` (signals, crash files, exit codes) and `main_exit`, the console script.

Exit codes: 0 success; 2 bad input (spec, arguments, weights, data, an unwritable destination);
3 verification failed; 70 an internal error (a bug: one line naming a crash file with the
traceback; --debug prints it); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM); 141 when the
reader of the output goes away. Nothing is half-written in any of these cases.
"""

from mnc.cli.main import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, main, main_exit
from mnc.cli.parser import make_parser
from mnc.cli.render import format_sweep

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "Terminated",
    "format_sweep",
    "main",
    "main_exit",
    "make_parser",
]
