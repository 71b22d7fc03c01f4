"""Expressions in block definitions (arguments, conditions, parameter defaults): the words and
functions they may use, their static check, and their evaluation."""

from __future__ import annotations

import operator
from dataclasses import dataclass

from mnc.errors import Collector, Loc, choices_hint, did_you_mean
from mnc.frontend.ast import Expr
from mnc.frontend.rounding import make_divisible
from mnc.ir import activations

DEFAULT_ACT = "default"
# Activation words (lower case) → IR activation names; None: no activation; "default": the spec's.
ACT_WORDS = {
    **{w: (None if fn == activations.IDENTITY else fn) for w, fn in activations.WORDS.items()},
    DEFAULT_ACT: DEFAULT_ACT,
}
FLAG_WORDS = {"yes": True, "true": True, "no": False, "false": False}
FUNCTIONS = {
    "make_divisible": (lambda v, d=8: make_divisible(v, int(d)), (1, 2)),
    "round": (lambda v: int(round(v)), (1, 1)),  # Python's round, as the reference implementations use
    "int": (lambda v: int(v), (1, 1)),
    "min": (min, (2, 8)),
    "max": (max, (2, 8)),
}
ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
# The env key under which a block's runner gives the spec's own activation, which `default` means
# (not a name a spec can write).
SPEC_ACTIVATION = "<the spec's activation>"
ARITHMETIC = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
}


# ---- checking ----------------------------------------------------------------------------------


def check_expr(e: Expr, names: set[str], problems: Collector, constant: bool = False) -> None:
    """Every name and function `e` uses exists. `names`: the parameters in scope; `constant`: a
    parameter's default, which cannot read `in` or `classes`."""
    if e.kind == "name":
        word = e.value.lower()
        if e.value in names or word in ACT_WORDS or word in FLAG_WORDS:
            return
        if not constant and e.value in ("in", "classes"):
            return
        known = sorted(names) + ([] if constant else ["in", "classes"])
        problems.error(
            f"unknown name '{e.value}'"
            + did_you_mean(e.value, known)
            + (f"; names here are {', '.join(known)}" if known else ""),
            e.loc,
        )
    elif e.kind == "func":
        if e.value not in FUNCTIONS:
            problems.error(
                f"unknown function '{e.value}'" + choices_hint(e.value, FUNCTIONS, "functions", ", ".join),
                e.loc,
            )
        else:
            low, high = FUNCTIONS[e.value][1]
            if not low <= len(e.args) <= high:
                problems.error(
                    f"'{e.value}' takes {low}" + (f" to {high}" if high != low else "") + " argument(s)", e.loc
                )
    for arg in e.args:
        check_expr(arg, names, problems, constant)


# ---- evaluating --------------------------------------------------------------------------------


class EvalError(Exception):
    """A value that the static checks cannot rule out (it depends on the row), found while
    evaluating; the block's runner reports it at `loc` with the use site as a note."""

    def __init__(self, message: str, loc: Loc):
        super().__init__(message)
        self.loc = loc


@dataclass(frozen=True)
class ActWord:
    """An activation named in an expression (or None for no activation)."""

    fn: str | None


def evaluate(e: Expr, env: dict):
    if e.kind == "number":
        return e.value
    if e.kind == "name":
        if e.value in env:
            return env[e.value]
        word = e.value.lower()
        if word in ACT_WORDS:
            return ActWord(ACT_WORDS[word])
        return FLAG_WORDS[word]
    if e.kind == "func":
        return FUNCTIONS[e.value][0](*(number(evaluate(a, env), a) for a in e.args))
    if e.kind == "neg":
        return -number(evaluate(e.args[0], env), e.args[0])
    if e.kind == "not":
        return not truth(evaluate(e.args[0], env), e.args[0])
    if e.kind == "and":
        return all(truth(evaluate(a, env), a) for a in e.args)
    if e.kind == "or":
        return any(truth(evaluate(a, env), a) for a in e.args)
    left, right = (evaluate(a, env) for a in e.args)
    if e.kind == "compare":
        if e.value in ("==", "!="):
            same = _comparable(left, env) == _comparable(right, env)
            return same if e.value == "==" else not same
        left, right = number(left, e.args[0]), number(right, e.args[1])
        return ORDER[e.value](left, right)
    left, right = number(left, e.args[0]), number(right, e.args[1])
    if e.value in ("/", "//") and right == 0:
        raise EvalError("division by zero", e.loc)
    return ARITHMETIC[e.value](left, right)  # only the chosen one: `x + 0` must not compute `x / 0`


def _comparable(value, env: dict):
    """A value as `==` compares it: an activation by its IR name however it was given (a table cell
    gives the name, an expression an ActWord; `default` is the spec's own, none is no activation)."""
    if isinstance(value, ActWord):
        value = value.fn
    if isinstance(value, str) and value == DEFAULT_ACT:
        value = env.get(SPEC_ACTIVATION, DEFAULT_ACT)
    return None if value == activations.IDENTITY else value


def number(value, e: Expr):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvalError(f"expected a number, got {value!r}", e.loc)
    return value


def truth(value, e: Expr) -> bool:
    if not isinstance(value, (bool, int, float)):
        raise EvalError(f"expected a condition, got {value!r}", e.loc)
    return bool(value)
