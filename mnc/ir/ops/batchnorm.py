"""batchnorm: batch normalisation in its inference form. attrs: eps. params: gamma, beta, mean, var,
one per channel."""

from __future__ import annotations

import numpy as np

from mnc.ir import kernels
from mnc.ir.ops.record import CALIBRATED, EPSILON, Attr, OpDef, register
from mnc.reproducible import stable


def _error(node, xs, in_vars, y, params, p):
    scale = params["gamma"] / np.sqrt(params["var"] + node.attrs["eps"])
    s = scale.reshape(1, -1, *[1] * (xs[0].ndim - 2))
    return s**2 * in_vars[0] + (p.output * s * xs[0]) ** 2


def _init(rng, shapes, x):
    """Random scale and shift; running statistics from the activations that reach it, so each
    normalised output has the spread its scale gives it at every depth."""
    axes = (0,) + tuple(range(2, x.ndim))
    (channels,) = shapes["gamma"]
    return {
        "gamma": rng.uniform(0.5, 1.5, channels),
        "beta": rng.normal(0.0, 0.25, channels),
        "mean": stable(x.mean(axis=axes, dtype=np.float64)),
        "var": stable(x.var(axis=axes, dtype=np.float64)),
    }


register(
    OpDef(
        "batchnorm",
        1,
        attrs=(Attr("eps", EPSILON),),
        infer=lambda a, ins: ins[0],
        run=lambda a, p, xs: kernels.batchnorm(xs[0], p["gamma"], p["beta"], p["mean"], p["var"], a["eps"]),
        error=_error,
        int8=CALIBRATED,
        param_shapes=lambda a, ins: {k: (ins[0][0],) for k in ("gamma", "beta", "mean", "var")},
        slots=("gamma", "beta", "mean", "var"),
        init=_init,
        counted_params=("gamma", "beta"),
    )
)
