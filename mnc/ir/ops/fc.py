"""fc: fully connected, weight [out, in], with an optional bias and fused activation.
attrs: out_features, bias, fused_act (absent or None: none)."""

from __future__ import annotations

import numpy as np

from mnc.ir import activations, kernels
from mnc.ir.ops.linear import BIAS, FUSED_ACT, float16_fused, linear_error, seeded_bias
from mnc.ir.ops.record import CALIBRATED, POSITIVE, Attr, OpDef, Shape, ShapeError, fmt, register
from mnc.reproducible import stable


def _infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 1:
        raise ShapeError(f"a fully connected layer needs a flat vector, got shape {fmt(ins[0])}")
    return (a["out_features"],)


def _params(a: dict, ins: list[Shape]) -> dict[str, Shape]:
    shapes = {"weight": (a["out_features"], ins[0][0])}
    if a["bias"]:
        shapes["bias"] = (a["out_features"],)
    return shapes


def _run(a: dict, p: dict, xs: list[np.ndarray]) -> np.ndarray:
    return activations.apply(a.get("fused_act"), kernels.fc(xs[0], p["weight"], p.get("bias")))


def _init(rng, shapes, x):
    """Scaled so the logits have unit spread on the seeded batch (softmax neither saturated nor flat)."""
    weight = rng.standard_normal(shapes["weight"])
    logits = x.reshape(x.shape[0], -1).astype(np.float64) @ weight.T
    return seeded_bias(rng, shapes, {"weight": weight / max(float(stable(logits.std())), 1e-12)})


register(
    OpDef(
        "fc",
        1,
        attrs=(
            Attr("out_features", POSITIVE),
            BIAS,
            FUSED_ACT,
        ),
        infer=_infer,
        run=_run,
        error=linear_error(lambda node, x, w: x @ w.T, lambda w: w.shape[1]),
        int8=CALIBRATED,
        param_shapes=_params,
        slots=("weight", "bias"),
        init=_init,
        macs=lambda a, ins, out: ins[0][0] * a["out_features"],
        counted_params=("weight", "bias"),
        absorbs=True,
        int8_weights=True,
        float16=float16_fused,
    )
)
