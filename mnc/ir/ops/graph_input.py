"""input: the network's input tensor. attrs: shape (per sample); pixel_scale (absent: the input is
the network's float tensor, as the spec's preprocessing gives it; present: the input is an image of
8-bit pixels, which the runtime multiplies by pixel_scale on the way in: 1 where the model casts
them itself, 1/255 where the runtime's image type scales them, as Core ML's does)."""

from __future__ import annotations

from mnc.ir.ops.record import CALIBRATED, EPSILON, SHAPE, Attr, OpDef, register


def _error(node, xs, in_vars, y, params, p):
    return (p.output * xs[0]) ** 2  # the input as given, rounded to the evaluation's precision


def pixel_scale(attrs: dict) -> float | None:
    """What an image input's pixels are multiplied by as the runtime hands them over; None: not an image."""
    return attrs.get("pixel_scale")


register(
    OpDef(
        "input",
        0,
        attrs=(Attr("shape", SHAPE), Attr("pixel_scale", EPSILON, optional=True)),
        infer=lambda a, ins: tuple(a["shape"]),
        run=lambda a, p, xs: xs[0] if pixel_scale(a) is None else xs[0] * pixel_scale(a),
        error=_error,
        int8=CALIBRATED,
    )
)
