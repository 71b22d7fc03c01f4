"""What conv and fc share: a dot product per output (its rounding error grows with its length),
weights, a bias, and an activation fused into them."""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

from mnc.ir import activations
from mnc.ir.ops.record import FLAG, FUSED_ACTIVATION, OPS, Attr
from mnc.ir.roundoff import FP16_TINY, FP16_U, TOLERANCE_SIGMAS

BIAS = Attr("bias", FLAG)
FUSED_ACT = Attr("fused_act", FUSED_ACTIVATION, optional=True)  # absent or None: none


def linear_error(products: Callable, length: Callable[[np.ndarray], int]):
    """The error model of y = act(Σ wᵢxᵢ + b): a dot product of n terms adds variance u²·n·Σ(wᵢxᵢ)² (each
    partial sum rounded), plus u_w²·Σ(wᵢxᵢ)² for the weights stored rounded; an error already in x is
    carried with the squared weights; a fused activation passes all of it at its steepest slope nearby.
    `products(node, x, w)` applies the op's linear map (no bias); `length(weight)` is n."""

    def error(node, xs, in_vars, y, params, p):
        # Variances need a few significant digits, not float64: float32 products are twice as fast.
        w2 = (params["weight"] ** 2).astype(np.float32)
        x, var_x = (xs[0] ** 2).astype(np.float32), in_vars[0].astype(np.float32)
        n = length(params["weight"])
        # The map is linear: what x's errors carry and what the products add go through it together.
        own = np.float32(p.accumulate**2 * n + p.weights**2)
        var = products(node, var_x + own * x, w2).astype(np.float64)
        fn = node.attrs.get("fused_act")
        if fn is not None:
            var = activations.slope(fn, pre_activation(node, params, xs), np.sqrt(var)) ** 2 * var
        return var

    return error


_kept: list | None = None  # within keeping_pre_activation(): [(node, params, x, pre)]


@contextlib.contextmanager
def keeping_pre_activation():
    """Within: a conv/fc's result before its fused activation is computed once per layer. The float32
    error model and the float16 rule of one layer both need it, in turn; outside, nothing is kept
    (a later call may come with weights changed in place)."""
    global _kept
    _kept = []
    try:
        yield
    finally:
        _kept = None


def pre_activation(node, params: dict, xs: list[np.ndarray]) -> np.ndarray:
    for kept_node, kept_params, kept_x, pre in _kept or ():
        if kept_node is node and kept_params is params and kept_x is xs[0]:
            return pre
    pre = OPS[node.op].run({**node.attrs, "fused_act": None}, params, xs)
    if _kept is not None:
        _kept[:] = [(node, params, xs[0], pre)]  # what it came from is held: no new array can share its address
    return pre


def float16_fused(node, params, xs, allowed):
    """A fused activation is a second op in a float16 program: its input is rounded to float16 too,
    and that error passes through it at its steepest slope nearby; its own float16 constants count."""
    fn = node.attrs.get("fused_act")
    if fn is None:
        return allowed
    pre = pre_activation(node, params, xs)
    pre_error = FP16_U * np.abs(pre) + FP16_TINY
    allowed = allowed + activations.slope(fn, pre, pre_error / TOLERANCE_SIGMAS) * pre_error
    extra = activations.ACTIVATIONS[fn].float16_constants_error
    return allowed if extra is None else allowed + extra(pre)


def seeded_bias(rng, shapes, params: dict) -> dict:
    if "bias" in shapes:
        params["bias"] = rng.normal(0.0, 0.1, shapes["bias"])
    return params
