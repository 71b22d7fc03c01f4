"""The block language: block definitions (`block NAME(params) … end`), their checks, and how a
block used in a table row is run to emit IR.

A block body is a list of primitive layers (PRIMITIVES below). Each primitive composes IR ops
(mnc.ir.ops says what the ops compute). A layer reads the tensor the layer above it made, or, with
`from=`, any tensor it can name: `input` (the block's input), an earlier layer, or a tap passed as
a parameter of type tap. Built-in blocks are definitions in prelude.mnet, written in the same
language as user blocks.
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
    "tap": "the name of a tap (a row's exported output), or image (the network's input)",
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
FROM = "from"  # every primitive's keyword argument: the tensor it reads instead of the current one


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
            "k×k convolution to c channels (dilated by `dilation`), then batch norm, then act; "
            "bias: a bias (default: when bn=no)",
            ("k", "c", "stride", "groups", "act", "bn", "dilation", "bias"),
            {"stride": 1, "groups": 1, "act": "default", "bn": True, "dilation": 1, "bias": None},
        ),
        Primitive(
            "se",
            "squeeze-and-excite: pool, 1×1 conv to `squeeze` channels, act, 1×1 conv back, gate, multiply",
            ("squeeze", "act", "gate"),
            {"act": "relu", "gate": "hsigmoid"},
        ),
        Primitive("add", "add a named earlier tensor (`input`: the block's input) to the current one", ("skip",), {}),
        Primitive("mul", "multiply the current tensor by a named one (a per-channel gate broadcasts)", ("other",), {}),
        Primitive(
            "concat",
            "join named tensors along channels (feature maps) or rows (per-anchor predictions); "
            "without arguments, the row's inputs (its `from` cell)",
            (),
            {},
        ),
        Primitive(
            "upsample",
            "bilinear resampling (half-pixel centres, PyTorch's align_corners=False) to the size of a named "
            "tensor (`to`) or by a factor (`scale`)",
            ("to", "scale"),
            {"to": None, "scale": None},
        ),
        Primitive(
            "per_anchor",
            "a detection head's A·K-channel map → one row of K values per anchor, rows ordered by position then anchor",
            ("columns",),
            {},
        ),
        Primitive("act", "an activation", ("fn",), {}),
        Primitive(
            "pool",
            "average pooling: global, or k×k windows at a stride (default k)",
            ("k", "stride"),
            {"k": None, "stride": None},
        ),
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
        if p.type == "tap":
            if p.default is not None and p.default.kind != "name":
                problems.error(f"the default of tap parameter '{p.name}' must name a tap", p.default.loc)
        elif p.default is not None:
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
        if name in params and params[name].type == "tap":
            problems.error(
                f"layer '{name}' has the name of a tap parameter of block '{defn.name}'; name it otherwise",
                layer.name_loc or layer.loc,
            )
        if name in layer_names:
            problems.error(
                f"two layers named '{name}' in block '{defn.name}'; name them (`other = {layer.primitive}(…)`)",
                layer.name_loc or layer.loc,
            )
        _check_args(layer, prim, params, layer_names, problems)
        if layer.condition is not None:
            _check_expr(layer.condition, {n for n, p in params.items() if p.type != "tap"}, problems)
        layer_names.add(name)


# Arguments that name a tensor (an earlier layer, `input`, or a tap parameter), not a value.
REFERENCES = {("add", "skip"), ("mul", "other"), ("upsample", "to")}


def is_reference(primitive: str, key: str | None) -> bool:
    return key == FROM or (primitive, key) in REFERENCES or primitive == "concat"


def _check_reference(prim: str, value: Expr, params: dict, layer_names: set[str], problems: Collector) -> None:
    taps = [p.name for p in params.values() if p.type == "tap"]
    if value.kind != "name" or (value.value != "input" and value.value not in layer_names and value.value not in taps):
        names = ", ".join(["input", *sorted(layer_names), *taps])
        problems.error(
            f"{prim}() takes the name of an earlier layer or `input`, or a parameter of type tap (here: {names})",
            value.loc,
        )


def _check_args(layer: Layer, prim: Primitive, params: dict, layer_names: set[str], problems: Collector) -> None:
    given: dict[str, Expr] = {}
    for i, (key, value) in enumerate(layer.args):
        if prim.name == "concat" and key is None:
            _check_reference(prim.name, value, params, layer_names, problems)
            continue
        if key == FROM:
            if FROM in given:
                problems.error(f"argument 'from' of '{prim.name}' is given twice", value.loc)
            given[FROM] = value
            _check_reference(prim.name, value, params, layer_names, problems)
            continue
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
        if is_reference(prim.name, key):
            _check_reference(prim.name, value, params, layer_names, problems)
            continue
        _check_expr(value, {n for n, p in params.items() if p.type != "tap"}, problems)
    for key in prim.params:
        if key not in given and key not in prim.defaults:
            problems.error(f"'{prim.name}' needs its '{key}' argument ({', '.join(prim.params)})", layer.loc)
    if prim.name == "upsample" and ("to" in given) == ("scale" in given):
        problems.error("upsample() takes either `to` (a tensor whose size to take) or `scale`, one of them", layer.loc)


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


def run_block(defn: BlockDef, e: Emitter, args: dict, use_site: Loc, row_inputs: list[str] | None = None) -> dict:
    """Emit the IR of one use of `defn` with its parameters bound to `args` (tap parameters bound
    to IR node names). `row_inputs`: what an argument-less concat() joins. Returns the IR node of
    each layer that was built, by layer name."""
    taps = {p.name for p in defn.params if p.type == "tap"}
    env = {k: v for k, v in args.items() if k not in taps}
    env.update({"in": e.channels, "classes": e.config.classes})
    named = {"input": e.current, **{k: args[k] for k in taps}}
    built = {}
    try:
        for layer in defn.layers:
            if layer.condition is not None and not _truth(evaluate(layer.condition, env), layer.condition):
                continue
            prim = PRIMITIVES[layer.primitive]
            values: dict = {"inputs": []} if prim.name == "concat" else {}
            for i, (key, value) in enumerate(layer.args):
                if prim.name == "concat" and key is None:
                    values["inputs"].append(_tensor(named, value))
                    continue
                key = key or prim.params[i]
                values[key] = _tensor(named, value) if is_reference(prim.name, key) else evaluate(value, env)
            for key, default in prim.defaults.items():
                values.setdefault(key, default)
            if prim.name == "concat" and not values["inputs"]:
                values["inputs"] = list(row_inputs or [e.current])
            if FROM in values:
                e.current = values.pop(FROM)
            name = layer.name or layer.primitive
            _EMIT[prim.name](e, name, values, layer)
            named[name] = built[name] = e.current
    except EvalError as exc:
        raise InputError(_at_use(str(exc), exc.loc, use_site)) from None
    return built


def _tensor(named: dict, ref: Expr) -> str:
    if ref.value not in named:  # checked to be an earlier layer: one whose condition was false
        raise EvalError(f"layer '{ref.value}' is not built in this use of the block (its condition is false)", ref.loc)
    return named[ref.value]


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
    bn = _flag(v["bn"], layer)
    e.conv(
        name,
        out,
        k,
        _whole(v["stride"], "stride", layer),
        groups=groups,
        act=_act(v["act"], e, layer),
        bn=bn,
        bias=not bn if v["bias"] is None else _flag(v["bias"], layer),
        dilation=_whole(v["dilation"], "dilation", layer),
    )


def _emit_pool(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    if v["k"] is None:
        if v["stride"] is not None:
            raise EvalError("pool(): a stride needs a window size k; without k the pooling is global", layer.loc)
        e.op(name, "global_avgpool")
        return
    k = _whole(v["k"], "pooling window k", layer)
    stride = k if v["stride"] is None else _whole(v["stride"], "stride", layer)
    e.op(name, "avgpool", attrs={"kernel": [k, k], "stride": [stride, stride]})


def _emit_upsample(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    shape = e.shape
    if len(shape) != 3:
        raise EvalError(f"upsample() needs a C×H×W feature map, got a {'×'.join(map(str, shape))} tensor", layer.loc)
    if v["to"] is not None:
        target = e.graph.node(v["to"]).shape
        if len(target) != 3:
            raise EvalError(f"upsample(to=…) names a tensor without height and width ({target})", layer.loc)
        size = list(target[1:])
    else:
        scale = v["scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise EvalError(f"upsample(scale=…) must be a number > 0, got {scale!r}", layer.loc)
        size = [int(shape[1] * scale), int(shape[2] * scale)]  # floor, as PyTorch's interpolate
        if min(size) < 1:
            raise EvalError(f"upsample(scale={scale:g}) of a {shape[1]}×{shape[2]} map leaves nothing", layer.loc)
    e.op(name, "resize", attrs={"size": size})


def _emit_mul(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    a, b = e.current, v["other"]
    # The IR's mul is (tensor, per-channel gate): the full-size operand first.
    inputs = [b, a] if e.graph.node(a).shape[1:] == (1, 1) and len(e.graph.node(b).shape) == 3 else [a, b]
    e.op(name, "mul", inputs)


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
    "mul": _emit_mul,
    "concat": lambda e, name, v, layer: e.op(name, "concat", v["inputs"]),
    "upsample": _emit_upsample,
    "per_anchor": lambda e, name, v, layer: e.op(
        name, "per_anchor", attrs={"columns": _whole(v["columns"], "columns", layer)}
    ),
    "act": _emit_act,
    "pool": _emit_pool,
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
    if p.type == "tap" and p.default is not None:
        from mnc.frontend.ast import TapRef

        return TapRef(p.default.value, p.default.loc)
    return evaluate(p.default, env or {}) if p.default is not None else None
