"""Block definitions (`block NAME(params) … end`): their parameter types, their static checks, and
the values of parameter defaults.

A block body is a list of layers, each a primitive (primitives.py) whose IR primitive_ir.py
emits. A layer reads the tensor the layer above it made, or, with `from=`, any tensor it can name:
`input` (the block's input), an earlier layer, or a tap passed as a parameter of type tap.
Built-in blocks are definitions in prelude.mnet (prelude.py), written in the same language as
user blocks; runner.py runs a block used in a table row.
"""

from __future__ import annotations

from mnc.errors import Collector, choices_hint, did_you_mean
from mnc.frontend.ast import BlockDef, Expr, Layer, Param, TapRef
from mnc.frontend.expressions import check_expr, evaluate
from mnc.frontend.primitives import FROM, PRIMITIVES, Primitive
from mnc.ir import activations

PARAM_TYPES = {
    "channels": "a channel count, width-scaled by α before the block sees it (k: the number of classes)",
    "int": "a whole number",
    "float": "a number",
    "flag": "yes or no (✓ in a table)",
    "act": f"an activation: {activations.describe_words()}, or default (the spec's)",
    "tap": "the name of a tap (a row's exported output), or image (the network's input)",
}
BUILTIN_NAMES = ("in", "classes", "input")


def check_block(defn: BlockDef, problems: Collector) -> None:
    """Static checks of a definition, each error at its place in the definition."""
    params: dict[str, object] = {}
    for p in defn.params:
        if p.name in params or p.name in BUILTIN_NAMES:
            why = "is a built-in name" if p.name in BUILTIN_NAMES else "appears twice"
            problems.error(f"parameter '{p.name}' of block '{defn.name}' {why}", p.loc)
        if p.type is not None and p.type not in PARAM_TYPES:
            problems.error(
                f"unknown parameter type '{p.type}'" + choices_hint(p.type, PARAM_TYPES, "types"),
                p.loc,
            )
        if p.type == "tap":
            if p.default is not None and p.default.kind != "name":
                problems.error(f"the default of tap parameter '{p.name}' must name a tap", p.default.loc)
        elif p.default is not None:
            check_expr(p.default, set(), problems, constant=True)
        params[p.name] = p
    layer_names: set[str] = set()
    for layer in defn.layers:
        prim = PRIMITIVES.get(layer.primitive)
        if prim is None:
            problems.error(
                f"unknown layer '{layer.primitive}'" + choices_hint(layer.primitive, PRIMITIVES, "layers"),
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
            check_expr(layer.condition, {n for n, p in params.items() if p.type != "tap"}, problems)
        layer_names.add(name)


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
        if prim.joins and key is None:
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
        if prim.names_tensor(key):
            _check_reference(prim.name, value, params, layer_names, problems)
            continue
        check_expr(value, {n for n, p in params.items() if p.type != "tap"}, problems)
    for key in prim.params:
        if key not in given and key not in prim.defaults:
            problems.error(f"'{prim.name}' needs its '{key}' argument ({', '.join(prim.params)})", layer.loc)
    if prim.check is not None:
        prim.check(given, layer, problems)


def default_value(p: Param, env: dict | None = None):
    """A parameter's default: a TapRef for a tap parameter, else its expression's value."""
    if p.type == "tap" and p.default is not None:
        return TapRef(p.default.value, p.default.loc)
    return evaluate(p.default, env or {}) if p.default is not None else None
