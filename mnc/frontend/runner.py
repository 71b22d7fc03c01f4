"""Running a block used in a table row: its layers' conditions and arguments evaluated with the
row's values, each built layer emitted through its primitive's record."""

from __future__ import annotations

from mnc.errors import Diagnostic, InputError, Loc
from mnc.frontend.ast import BlockDef, Expr
from mnc.frontend.emitter import Emitter
from mnc.frontend.expressions import SPEC_ACTIVATION, EvalError, evaluate, truth
from mnc.frontend.primitives import FROM, PRIMITIVES


def run_block(defn: BlockDef, e: Emitter, args: dict, use_site: Loc, row_inputs: list[str] | None = None) -> dict:
    """Emit the IR of one use of `defn` with its parameters bound to `args` (tap parameters bound
    to IR node names). `row_inputs`: what a joining primitive (concat) written without tensors
    joins. Returns the IR node of each layer that was built, by layer name."""
    taps = {p.name for p in defn.params if p.type == "tap"}
    env = {k: v for k, v in args.items() if k not in taps}
    env.update({"in": e.channels, "classes": e.config.classes, SPEC_ACTIVATION: e.config.settings.activation})
    named = {"input": e.current, **{k: args[k] for k in taps}}
    built = {}
    try:
        for layer in defn.layers:
            if layer.condition is not None and not truth(evaluate(layer.condition, env), layer.condition):
                continue
            prim = PRIMITIVES[layer.primitive]
            values: dict = {"inputs": []} if prim.joins else {}
            for i, (key, value) in enumerate(layer.args):
                if prim.joins and key is None:
                    values["inputs"].append(_tensor(named, value))
                    continue
                key = key or prim.params[i]
                values[key] = _tensor(named, value) if prim.names_tensor(key) else evaluate(value, env)
            for key, default in prim.defaults.items():
                values.setdefault(key, default)
            if prim.joins and not values["inputs"]:
                values["inputs"] = list(row_inputs or [e.current])
            if FROM in values:
                e.current = values.pop(FROM)
            name = layer.name or layer.primitive
            prim.emit(e, name, values, layer)
            named[name] = built[name] = e.current
    except EvalError as exc:
        raise InputError(Diagnostic(str(exc), exc.loc, notes=[("in the block used here", use_site)])) from None
    return built


def _tensor(named: dict, ref: Expr) -> str:
    if ref.value not in named:  # checked to be an earlier layer: one whose condition was false
        raise EvalError(f"layer '{ref.value}' is not built in this use of the block (its condition is false)", ref.loc)
    return named[ref.value]
