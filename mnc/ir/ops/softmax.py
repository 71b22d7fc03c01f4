"""softmax over channels."""

from __future__ import annotations

from mnc.ir import kernels
from mnc.ir.ops.record import UNIT_INTERVAL, OpDef, register


def _error(node, xs, in_vars, y, params, p):
    # dp_i = p_i (dz_i − Σ_j p_j dz_j), the terms taken as independent.
    return y**2 * (in_vars[0] + (y**2 * in_vars[0]).sum(axis=1, keepdims=True))


register(
    OpDef(
        "softmax",
        1,
        attrs=(),
        infer=lambda a, ins: ins[0],
        run=lambda a, p, xs: kernels.softmax(xs[0], axis=1),
        error=_error,
        int8=UNIT_INTERVAL,
    )
)
