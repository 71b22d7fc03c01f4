"""affine: y = act(x·scale + shift), one scale and shift per channel (shape [C]) or one for every
channel (shape [1]), with an optional fused activation as conv's.

No spec writes it: a target's rewrites (mnc/passes/rewrites.py) put it where its runtime computes
a multiply-add of constants: the image input's normalisation, TFLite's hard sigmoid. Its constants
are float32, as every target stores them.

attrs: per_channel (absent: true; false: one scale and shift, shape [1]), fused_act (absent or None:
none). params: scale, shift."""

from __future__ import annotations

import numpy as np

from mnc.ir import activations
from mnc.ir.ops.linear import FUSED_ACT, float16_fused, pre_activation
from mnc.ir.ops.record import CALIBRATED, FLAG, Attr, OpDef, Shape, ShapeError, register

SLOTS = ("scale", "shift")


def channels(param: np.ndarray, x_ndim: int) -> np.ndarray:
    """A parameter shaped to broadcast over a batch of x (its channels on axis 1): (1, C, 1, 1) for
    feature maps, (1, F) for vectors; a one-value parameter the same, with 1 for C."""
    return np.reshape(param, (1, -1, *[1] * (x_ndim - 2)))


def _infer(a: dict, ins: list[Shape]) -> Shape:
    if not ins[0]:
        raise ShapeError("an affine map needs a tensor with channels, got a scalar")
    return ins[0]


def per_channel(a: dict) -> bool:
    return a.get("per_channel", True)


def _params(a: dict, ins: list[Shape]) -> dict[str, Shape]:
    return {k: (ins[0][0] if per_channel(a) else 1,) for k in SLOTS}


def _run(a: dict, p: dict, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    return activations.apply(a.get("fused_act"), x * channels(p["scale"], x.ndim) + channels(p["shift"], x.ndim))


def _error(node, xs, in_vars, y, params, p):
    """x·s is rounded (u·|x·s|), then the sum (the caller adds the result's rounding when no
    activation follows; with one, u·|x·s + b| is the activation's input error); stored constants
    are rounded (u_w·|x·s|, u_w·|b|); an error already in x is carried with s²; a fused activation
    passes all of it at its steepest slope nearby."""
    x = xs[0]
    s, b = channels(params["scale"], x.ndim), channels(params["shift"], x.ndim)
    product = x * s
    var = s**2 * in_vars[0] + (p.accumulate**2 + p.weights**2) * product**2 + (p.weights * b) ** 2
    fn = node.attrs.get("fused_act")
    if fn is not None:
        pre = pre_activation(node, params, xs)
        var = var + (p.output * pre) ** 2
        var = activations.slope(fn, pre, np.sqrt(var)) ** 2 * var
    return np.broadcast_to(var, y.shape)


def _init(rng, shapes, x):
    (channels_,) = shapes["scale"]
    return {"scale": rng.uniform(0.5, 1.5, channels_), "shift": rng.normal(0.0, 0.25, channels_)}


AFFINE = register(
    OpDef(
        "affine",
        1,
        attrs=(Attr("per_channel", FLAG, optional=True), FUSED_ACT),
        infer=_infer,
        run=_run,
        error=_error,
        # Its own calibrated grid (or the one the rewrite that made it gives it); each target computes
        # it between dequantisation and quantisation where its input is float or its constants are
        # per channel, in its int8 kernels where its runtime has them (TFLite's ADD and MUL with one
        # constant).
        int8=CALIBRATED,
        param_shapes=_params,
        slots=SLOTS,
        init=_init,
        counted_params=SLOTS,
        float16=float16_fused,
    )
)
