"""Diagnostics: located, caret-annotated messages and the exceptions that carry them.

Exit codes are part of the CLI contract: 2 for bad input (`InputError`), 3 for a
failed numerical check (`VerificationError`), 70 for anything else (a bug).
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass, field

# Spec texts by path, so a diagnostic raised long after parsing (during lowering,
# shape inference or a pass) can still print the source line it points at.
_SOURCES: dict[str, str] = {}


def register_source(path: str, text: str) -> None:
    _SOURCES[path] = text


@dataclass(frozen=True)
class Loc:
    """A position in a spec file: 1-based line and column, optional end column."""

    path: str
    line: int
    col: int
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}" if self.line else self.path

    @staticmethod
    def file(path: str) -> "Loc":
        """A whole file, for inputs without lines (weights, data)."""
        return Loc(str(path), 0, 0)


@dataclass
class Diagnostic:
    message: str
    loc: Loc | None = None
    severity: str = "error"
    notes: list[tuple[str, Loc | None]] = field(default_factory=list)

    def render(self) -> str:
        lines = [_headline(self.severity, self.message, self.loc)]
        lines += _excerpt(self.loc)
        for text, loc in self.notes:
            lines.append(_headline("note", text, loc))
            lines += _excerpt(loc)
        return "\n".join(lines)


def _headline(severity: str, message: str, loc: Loc | None) -> str:
    return f"{loc}: {severity}: {message}" if loc else f"mnc: {severity}: {message}"


def _excerpt(loc: Loc | None) -> list[str]:
    if loc is None or loc.path not in _SOURCES:
        return []
    source_lines = _SOURCES[loc.path].splitlines()
    if not 1 <= loc.line <= len(source_lines):
        return []
    text = source_lines[loc.line - 1].expandtabs(1)
    width = max(1, (loc.end_col or loc.col + 1) - loc.col)
    return [f"  {text}", "  " + " " * (loc.col - 1) + "^" + "~" * (width - 1)]


EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in mnc


class MncError(Exception):
    """Base of the errors the CLI reports without a traceback."""

    exit_code = EXIT_INTERNAL

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic | str, loc: Loc | None = None):
        if isinstance(diagnostics, str):
            diagnostics = Diagnostic(diagnostics, loc)
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.render() for d in diagnostics))

    def render(self) -> str:
        text = "\n".join(d.render() for d in self.diagnostics)
        if len(self.diagnostics) > 1:
            text += f"\n{len(self.diagnostics)} errors"
        return text


class InputError(MncError):
    """Bad input: a spec, an argument, weights or data. Exit code 2."""

    exit_code = 2


class VerificationError(MncError):
    """An artifact does not compute what the spec means. Exit code 3."""

    exit_code = 3


class Collector:
    """Gathers diagnostics so one run can report every independent error in a spec."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []

    def error(self, message: str, loc: Loc | None = None, notes=()) -> None:
        self.diagnostics.append(Diagnostic(message, loc, notes=list(notes)))

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise InputError(self.diagnostics)


def did_you_mean(word: str, choices, synonyms: dict[str, str] | None = None) -> str:
    """'; did you mean …?' for a misspelt name, or ''."""
    word = word.lower()
    if synonyms and synonyms.get(word) in choices:
        return f"; did you mean '{synonyms[word]}'?"
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# ---- parameters in messages ----------------------------------------------------------------------
# The library's messages name what the caller gave. A Python caller gave keyword arguments
# (`calib=`, `quantize='int8'`); the command line gave flags (`--calib`, `--quantize int8`), and
# installs its wording, a mapping from parameter to flag it owns, while it runs (`wording`).

_UNSET = object()


@dataclass(frozen=True)
class Wording:
    """How messages name parameters. flags None: as keyword arguments; else parameter → flag (a
    parameter not in it is `--` and its name with dashes)."""

    flags: dict[str, str] | None = None

    def name(self, parameter: str, value=_UNSET, metavar: str | None = None) -> str:
        if self.flags is None:
            if metavar is not None:
                return f"{parameter}={metavar}"
            return f"{parameter}=" if value is _UNSET else f"{parameter}={_python(value)}"
        flag = self.flags.get(parameter, "--" + parameter.replace("_", "-"))
        if metavar is not None:
            return f"{flag} {metavar}"
        return flag if value is _UNSET else f"{flag} {_shown(value)}"


PYTHON = Wording()
_wording = PYTHON


def param(parameter: str, value=_UNSET, *, metavar: str | None = None) -> str:
    """A parameter (with the value given, or a placeholder for one) as the caller wrote it:
    `calib=`, `quantize='int8'`, `calib=DATA` from Python; `--calib`, `--quantize int8`,
    `--calib DATA` on the command line."""
    return _wording.name(parameter, value, metavar)


def current_wording() -> Wording:
    return _wording


@contextlib.contextmanager
def wording(words: Wording):
    """Messages raised inside name parameters this way (the command line: as its flags)."""
    global _wording
    previous, _wording = _wording, words
    try:
        yield
    finally:
        _wording = previous


def _python(value) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def one_of(choices) -> str:
    return ", ".join(f"'{c}'" for c in sorted(choices))


def choices_hint(word: str, choices, what: str, listed=one_of, synonyms: dict[str, str] | None = None) -> str:
    """What a message adds after a name that is none of `choices`: a close one, if any ('; did you
    mean …?'), then all of them ('; {what} are …', as `listed` writes them: one_of sorts and quotes)."""
    return did_you_mean(word, choices, synonyms) + f"; {what} are {listed(choices)}"
