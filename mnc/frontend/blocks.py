"""The block language: block definitions (`block NAME(params) … end`), their checks, and how a
block used in a table row is run to emit IR.

A block body is a list of primitive layers: conv, se, add, act, pool, fc, softmax. Each
primitive composes IR ops (mnc.ir.ops says what the ops compute). Built-in blocks (conv2d,
dwsep, bottleneck, bneck, avgpool, fc, softmax) are definitions in prelude.mnet, written in the
same language as user blocks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from mnc.errors import Collector, InputError, Loc, did_you_mean, one_of
from mnc.frontend.ast import BlockDef, Expr, Layer
from mnc.frontend.emitter import Emitter
from mnc.frontend.rounding import make_divisible
from mnc.ir import activations

PARAM_TYPES = {
    "channels": "a channel count, width-scaled by α before the block sees it (k: the number of classes)",
    "int": "a whole number",
    "float": "a number",
    "flag": "yes or no (✓ in a table)",
    "act": f"an activation: {activations.describe_words()}, or default (the spec's)",
}
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
BUILTIN_NAMES = ("in", "classes", "input")


@dataclass(frozen=True)
class Primitive:
    name: str
    summary: str
    params: tuple[str, ...]  # in positional order
    defaults: dict  # param → default; absent: required


PRIMITIVES = {
    p.name: p
    for p in [
        Primitive(
            "conv",
            "k×k convolution to c channels, then batch norm (or a bias when bn=no), then act",
            ("k", "c", "stride", "groups", "act", "bn"),
            {"stride": 1, "groups": 1, "act": "default", "bn": True},
        ),
        Primitive(
            "se",
            "squeeze-and-excite: pool, 1×1 conv to `squeeze` channels, act, 1×1 conv back, gate, multiply",
            ("squeeze", "act", "gate"),
            {"act": "relu", "gate": "hsigmoid"},
        ),
        Primitive("add", "add a named earlier tensor (`input`: the block's input) to the current one", ("skip",), {}),
        Primitive("act", "an activation", ("fn",), {}),
        Primitive("pool", "global average pooling", (), {}),
        Primitive("fc", "fully connected layer with bias (flattens its input)", ("c", "act"), {"act": None}),
        Primitive("softmax", "softmax over the channels", (), {}),
    ]
}


# ---- checking definitions --------------------------------------------------------------------


def check_block(defn: BlockDef, problems: Collector) -> None:
    """Static checks of a definition, each error at its place in the definition."""
    params: dict[str, object] = {}
    for p in defn.params:
        if p.name in params or p.name in BUILTIN_NAMES:
            why = "is a built-in name" if p.name in BUILTIN_NAMES else "appears twice"
            problems.error(f"parameter '{p.name}' of block '{defn.name}' {why}", p.loc)
        if p.type is not None and p.type not in PARAM_TYPES:
            problems.error(
                f"unknown parameter type '{p.type}'"
                + did_you_mean(p.type, PARAM_TYPES)
                + f"; types are {one_of(PARAM_TYPES)}",
                p.loc,
            )
        if p.default is not None:
            _check_expr(p.default, set(), problems, constant=True)
        params[p.name] = p
    layer_names: set[str] = set()
    for layer in defn.layers:
        prim = PRIMITIVES.get(layer.primitive)
        if prim is None:
            problems.error(
                f"unknown layer '{layer.primitive}'"
                + did_you_mean(layer.primitive, PRIMITIVES)
                + f"; layers are {one_of(PRIMITIVES)}",
                layer.loc,
            )
            continue
        name = layer.name or layer.primitive
        if name in layer_names:
            problems.error(
                f"two layers named '{name}' in block '{defn.name}'; name them (`other = {layer.primitive}(…)`)",
                layer.name_loc or layer.loc,
            )
        _check_args(layer, prim, params, layer_names, problems)
        if layer.condition is not None:
            _check_expr(layer.condition, set(params), problems)
        layer_names.add(name)


def _check_args(layer: Layer, prim: Primitive, params: dict, layer_names: set[str], problems: Collector) -> None:
    given: dict[str, Expr] = {}
    for i, (key, value) in enumerate(layer.args):
        if key is None:
            if i >= len(prim.params):
                problems.error(
                    f"'{prim.name}' takes at most {len(prim.params)} argument(s) ({', '.join(prim.params)})", value.loc
                )
                continue
            key = prim.params[i]
        elif key not in prim.params:
            problems.error(
                f"'{prim.name}' has no argument '{key}'"
                + did_you_mean(key, prim.params)
                + f"; it takes {', '.join(prim.params) or 'none'}",
                value.loc,
            )
            continue
        if key in given:
            problems.error(f"argument '{key}' of '{prim.name}' is given twice", value.loc)
        given[key] = value
        if prim.name == "add":
            if value.kind != "name" or (value.value != "input" and value.value not in layer_names):
                earlier = ", ".join(["input", *sorted(layer_names)])
                problems.error(f"add() takes the name of an earlier layer or `input` (here: {earlier})", value.loc)
            continue
        _check_expr(value, set(params), problems)
    for key in prim.params:
        if key not in given and key not in prim.defaults:
            problems.error(f"'{prim.name}' needs its '{key}' argument ({', '.join(prim.params)})", layer.loc)


def _check_expr(e: Expr, names: set[str], problems: Collector, constant: bool = False) -> None:
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
                f"unknown function '{e.value}'"
                + did_you_mean(e.value, FUNCTIONS)
                + f"; functions are {', '.join(FUNCTIONS)}",
                e.loc,
            )
        else:
            low, high = FUNCTIONS[e.value][1]
            if not low <= len(e.args) <= high:
                problems.error(
                    f"'{e.value}' takes {low}" + (f" to {high}" if high != low else "") + " argument(s)", e.loc
                )
    for arg in e.args:
        _check_expr(arg, names, problems, constant)


# ---- evaluating ------------------------------------------------------------------------------


class EvalError(Exception):
    def __init__(self, message: str, loc: Loc):
        super().__init__(message)
        self.loc = loc


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
        return FUNCTIONS[e.value][0](*(_number(evaluate(a, env), a) for a in e.args))
    if e.kind == "neg":
        return -_number(evaluate(e.args[0], env), e.args[0])
    if e.kind == "not":
        return not _truth(evaluate(e.args[0], env), e.args[0])
    if e.kind == "and":
        return all(_truth(evaluate(a, env), a) for a in e.args)
    if e.kind == "or":
        return any(_truth(evaluate(a, env), a) for a in e.args)
    left, right = (evaluate(a, env) for a in e.args)
    if e.kind == "compare":
        return {
            "==": left == right,
            "!=": left != right,
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
        }[e.value]
    left, right = _number(left, e.args[0]), _number(right, e.args[1])
    if e.value in ("/", "//") and right == 0:
        raise EvalError("division by zero", e.loc)
    return {"+": left + right, "-": left - right, "*": left * right, "/": left / right, "//": left // right}[e.value]


@dataclass(frozen=True)
class ActWord:
    """An activation named in an expression (or None for no activation)."""

    fn: str | None


def _number(value, e: Expr):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvalError(f"expected a number, got {value!r}", e.loc)
    return value


def _truth(value, e: Expr) -> bool:
    if not isinstance(value, (bool, int, float)):
        raise EvalError(f"expected a condition, got {value!r}", e.loc)
    return bool(value)


# ---- running a block ------------------------------------------------------------------------


def run_block(defn: BlockDef, e: Emitter, args: dict, use_site: Loc) -> None:
    """Emit the IR of one use of `defn` with its parameters bound to `args`."""
    env = dict(args)
    env.update({"in": e.channels, "classes": e.config.classes})
    named = {"input": e.current}
    try:
        for layer in defn.layers:
            if layer.condition is not None and not _truth(evaluate(layer.condition, env), layer.condition):
                continue
            prim = PRIMITIVES[layer.primitive]
            values = {}
            for i, (key, value) in enumerate(layer.args):
                key = key or prim.params[i]
                values[key] = named[value.value] if prim.name == "add" else evaluate(value, env)
            for key, default in prim.defaults.items():
                values.setdefault(key, default)
            name = layer.name or layer.primitive
            _EMIT[prim.name](e, name, values, layer)
            named[name] = e.current
    except EvalError as exc:
        raise InputError(_at_use(str(exc), exc.loc, use_site)) from None


def _at_use(message: str, loc: Loc, use_site: Loc):
    from mnc.errors import Diagnostic

    return Diagnostic(message, loc, notes=[("in the block used here", use_site)])


def _whole(value, what: str, layer: Layer, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise EvalError(f"{what} must be a whole number ≥ {minimum}, got {value!r}", layer.loc)
    return int(value)


def _act(value, e: Emitter, layer: Layer) -> str | None:
    if isinstance(value, ActWord):
        value = value.fn
    if value == DEFAULT_ACT:
        return e.config.settings.activation
    if value is None or value in activations.ACTIVATIONS:
        return None if value == activations.IDENTITY else value
    raise EvalError(f"expected an activation, got {value!r}", layer.loc)


def _flag(value, layer: Layer) -> bool:
    if isinstance(value, bool):
        return value
    raise EvalError(f"expected yes or no, got {value!r}", layer.loc)


def _emit_conv(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    k = _whole(v["k"], "kernel size k", layer)
    if k % 2 == 0:
        raise EvalError(f"kernel size must be odd, got {k}", layer.loc)
    out = _whole(v["c"], "channels c", layer)
    groups = _whole(v["groups"], "groups", layer)
    if e.channels % groups or out % groups:
        raise EvalError(f"{e.channels} input and {out} output channels cannot be split into {groups} groups", layer.loc)
    e.conv(
        name,
        out,
        k,
        _whole(v["stride"], "stride", layer),
        groups=groups,
        act=_act(v["act"], e, layer),
        bn=_flag(v["bn"], layer),
    )


def _emit_se(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    squeeze = _whole(v["squeeze"], "squeeze channels", layer)
    x, channels = e.current, e.channels
    e.op(f"{name}.pool", "global_avgpool")
    e.conv(f"{name}.fc1", squeeze, 1, 1, act=_act(v["act"], e, layer), bn=False)
    e.conv(f"{name}.fc2", channels, 1, 1, act=_act(v["gate"], e, layer), bn=False)
    e.op(name, "mul", [x, e.current])


def _emit_act(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    fn = _act(v["fn"], e, layer)
    e.op(name, "act", attrs={"fn": fn or activations.IDENTITY})


def _emit_fc(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    out = _whole(v["c"], "channels c", layer)
    if len(e.shape) != 1:
        e.op("flatten" if name == "fc" else f"{name}.flatten", "flatten")
    e.fc(name, out)
    fn = _act(v["act"], e, layer)
    if fn is not None:
        e.op(f"{name}.act", "act", attrs={"fn": fn})


_EMIT = {
    "conv": _emit_conv,
    "se": _emit_se,
    "add": lambda e, name, v, layer: e.op(name, "add", [v["skip"], e.current]),
    "act": _emit_act,
    "pool": lambda e, name, v, layer: e.op(name, "global_avgpool"),
    "fc": _emit_fc,
    "softmax": lambda e, name, v, layer: e.op(name, "softmax"),
}


# ---- the built-in blocks -----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def builtin_blocks() -> dict[str, BlockDef]:
    from mnc.frontend.parser import parse_text

    path = Path(__file__).with_name("prelude.mnet")
    ast = parse_text(path.read_text(encoding="utf-8"), "<prelude>")
    problems = Collector()
    for defn in ast.blocks:
        check_block(defn, problems)
    problems.raise_if_any()
    return {defn.name: defn for defn in ast.blocks}


def default_value(p, env: dict | None = None):
    return evaluate(p.default, env or {}) if p.default is not None else None
