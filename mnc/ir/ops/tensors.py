"""Ops that move values without computing new ones: concat (along the first per-sample axis:
channels of maps, rows of predictions), per_anchor (a detection head's (A·K, H, W) map → (H·W·A, K)
rows; attrs columns = K) and flatten."""

from __future__ import annotations

from math import prod

import numpy as np

from mnc.ir import kernels
from mnc.ir.ops.record import (
    CALIBRATED,
    KEEPS_INPUT_GRID,
    POSITIVE,
    Attr,
    OpDef,
    Shape,
    ShapeError,
    carried,
    fmt,
    register,
)


def _concat_infer(a: dict, ins: list[Shape]) -> Shape:
    rest = {tuple(s[1:]) for s in ins}
    if len(rest) != 1 or len({len(s) for s in ins}) != 1:
        raise ShapeError(
            "cannot concatenate tensors whose shapes differ beyond the first axis: " + ", ".join(fmt(s) for s in ins)
        )
    return (sum(s[0] for s in ins), *ins[0][1:])


register(
    OpDef(
        "concat",
        None,
        attrs=(),
        infer=_concat_infer,
        run=lambda a, p, xs: np.concatenate(xs, axis=1),
        error=lambda node, xs, in_vars, y, params, p: np.concatenate(in_vars, axis=1),
        # Its inputs may lie on different grids: it has its own (TFLite requantises the others to it).
        int8=CALIBRATED,
    )
)


def _per_anchor_infer(a: dict, ins: list[Shape]) -> Shape:
    k = a["columns"]
    if len(ins[0]) != 3 or ins[0][0] % k:
        raise ShapeError(f"cannot split a {fmt(ins[0])} map into rows of {k} values per anchor")
    c, h, w = ins[0]
    return (h * w * c // k, k)


register(
    OpDef(
        "per_anchor",
        1,
        attrs=(Attr("columns", POSITIVE),),
        infer=_per_anchor_infer,
        run=lambda a, p, xs: kernels.per_anchor(xs[0], a["columns"]),
        error=lambda node, xs, in_vars, y, params, p: kernels.per_anchor(in_vars[0], node.attrs["columns"]),
        int8=KEEPS_INPUT_GRID,
    )
)

register(
    OpDef(
        "flatten",
        1,
        attrs=(),
        infer=lambda a, ins: (prod(ins[0]),),
        run=lambda a, p, xs: xs[0].reshape(xs[0].shape[0], -1),
        error=carried,
        int8=KEEPS_INPUT_GRID,
    )
)
