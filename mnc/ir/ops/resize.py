"""resize: bilinear, half-pixel centres (PyTorch's align_corners=False). attrs: size [H, W]."""

from __future__ import annotations

from mnc.ir import kernels
from mnc.ir.ops.record import KEEPS_INPUT_GRID, PAIR, Attr, OpDef, Shape, ShapeError, fmt, register

MAX_RESIZE = 16384


def _infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 3:
        raise ShapeError(f"upsampling needs a C×H×W feature map, got shape {fmt(ins[0])}")
    h, w = a["size"]
    if h < 1 or w < 1 or h > MAX_RESIZE or w > MAX_RESIZE:
        raise ShapeError(f"cannot resample a {fmt(ins[0][1:])} map to {h}×{w}")
    return (ins[0][0], h, w)


def _error(node, xs, in_vars, y, params, p):
    # Each output is Σ wᵢxᵢ over 4 inputs with weights in [0, 1] (themselves rounded).
    size = node.attrs["size"]
    return kernels.resize_bilinear(in_vars[0], size, squared=True) + (4 * p.accumulate) ** 2 * (
        kernels.resize_bilinear(xs[0] ** 2, size, squared=True)
    )


register(
    OpDef(
        "resize",
        1,
        attrs=(Attr("size", PAIR),),
        infer=_infer,
        run=lambda a, p, xs: kernels.resize_bilinear(xs[0], a["size"]),
        error=_error,
        # Interpolating values on one grid stays on it (TFLite's int8 resize requires it).
        int8=KEEPS_INPUT_GRID,
    )
)
