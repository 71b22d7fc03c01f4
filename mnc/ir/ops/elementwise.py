"""Elementwise ops: act (an activation of the registry), add (residual sums), mul (a feature map
times a same-shaped tensor or a per-channel gate, as squeeze-and-excite)."""

from __future__ import annotations

import numpy as np

from mnc.ir import activations
from mnc.ir.ops.record import ACTIVATION, CALIBRATED, UNIT_INTERVAL, Attr, OpDef, Shape, ShapeError, fmt, register

# ---- act: attrs fn (a name in mnc.ir.activations.ACTIVATIONS) --------------------------------------


def _act_error(node, xs, in_vars, y, params, p):
    return activations.slope(node.attrs["fn"], xs[0], np.sqrt(in_vars[0])) ** 2 * in_vars[0]


def _act_float16(node, params, xs, allowed):
    extra = activations.ACTIVATIONS[node.attrs["fn"]].float16_constants_error
    return allowed if extra is None else allowed + extra(xs[0])


register(
    OpDef(
        "act",
        1,
        attrs=(Attr("fn", ACTIVATION),),
        infer=lambda a, ins: ins[0],
        run=lambda a, p, xs: activations.apply(a["fn"], xs[0]),
        error=_act_error,
        # A sigmoid's output lies in [0, 1] (one fused into a conv keeps the conv's calibrated range).
        int8=lambda a: UNIT_INTERVAL if a["fn"] == "sigmoid" else CALIBRATED,
        float16=_act_float16,
    )
)


# ---- add ---------------------------------------------------------------------------------------------


def _add_infer(a: dict, ins: list[Shape]) -> Shape:
    if len(set(ins)) != 1:
        raise ShapeError("cannot add tensors of different shapes: " + " and ".join(fmt(s) for s in ins))
    return ins[0]


register(
    OpDef(
        "add",
        None,
        attrs=(),
        infer=_add_infer,
        run=lambda a, p, xs: sum(xs[1:], xs[0]),
        error=lambda node, xs, in_vars, y, params, p: sum(in_vars),
        int8=CALIBRATED,
    )
)


# ---- mul ---------------------------------------------------------------------------------------------


def _mul_infer(a: dict, ins: list[Shape]) -> Shape:
    x, gate = ins
    if len(x) != len(gate) or any(g not in (1, d) for g, d in zip(gate, x)):
        raise ShapeError(f"cannot scale a {fmt(x)} tensor by a {fmt(gate)} one")
    return x


def _mul_error(node, xs, in_vars, y, params, p):
    a, b = xs
    return b**2 * in_vars[0] + a**2 * in_vars[1]


register(
    OpDef(
        "mul",
        2,
        attrs=(),
        infer=_mul_infer,
        run=lambda a, p, xs: xs[0] * xs[1],
        error=_mul_error,
        int8=CALIBRATED,
    )
)
