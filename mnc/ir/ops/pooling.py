"""Averages: global_avgpool (C×H×W → C×1×1) and avgpool (attrs kernel [kh, kw], stride [sh, sw];
no padding). An average of values on one grid stays on it: int8 keeps the input's grid."""

from __future__ import annotations

from mnc.ir import kernels
from mnc.ir.ops.record import KEEPS_INPUT_GRID, PAIR, Attr, OpDef, Shape, ShapeError, fmt, register


def _global_infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 3:
        raise ShapeError(f"global pooling needs a C×H×W feature map, got shape {fmt(ins[0])}")
    return (ins[0][0], 1, 1)


def _global_error(node, xs, in_vars, y, params, p):
    hw = xs[0].shape[2] * xs[0].shape[3]
    return in_vars[0].mean(axis=(2, 3), keepdims=True) / hw + p.accumulate**2 * (xs[0] ** 2).mean(
        axis=(2, 3), keepdims=True
    )


register(
    OpDef(
        "global_avgpool",
        1,
        attrs=(),
        infer=_global_infer,
        run=lambda a, p, xs: kernels.global_avgpool(xs[0]),
        error=_global_error,
        int8=KEEPS_INPUT_GRID,
    )
)


def _infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 3:
        raise ShapeError(f"pooling needs a C×H×W feature map, got shape {fmt(ins[0])}")
    c, h, w = ins[0]
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    if kh > h or kw > w:
        raise ShapeError(f"a {kh}×{kw} pooling window does not fit in a {h}×{w} feature map")
    return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)


def _error(node, xs, in_vars, y, params, p):
    a = node.attrs
    n = a["kernel"][0] * a["kernel"][1]
    return kernels.avgpool(in_vars[0], a["kernel"], a["stride"]) / n + p.accumulate**2 * kernels.avgpool(
        xs[0] ** 2, a["kernel"], a["stride"]
    )


register(
    OpDef(
        "avgpool",
        1,
        attrs=(Attr("kernel", PAIR), Attr("stride", PAIR)),
        infer=_infer,
        run=lambda a, p, xs: kernels.avgpool(xs[0], a["kernel"], a["stride"]),
        error=_error,
        int8=KEEPS_INPUT_GRID,
    )
)
