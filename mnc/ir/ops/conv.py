"""conv: 2-D convolution (cross-correlation), grouped and dilated, with an optional bias and fused
activation. Weight OIHW.

attrs: out_channels, kernel [kh, kw], stride [sh, sw], pads [top, left, bottom, right], groups,
bias, fused_act (absent or None: none), dilation [dh, dw] (absent: 1, 1)."""

from __future__ import annotations

from math import prod

import numpy as np

from mnc.ir import activations, kernels
from mnc.ir.ops.linear import BIAS, FUSED_ACT, float16_fused, linear_error, seeded_bias
from mnc.ir.ops.record import CALIBRATED, PADS, PAIR, POSITIVE, Attr, OpDef, Shape, ShapeError, fmt, register


def dilation(a: dict) -> list[int]:
    return a.get("dilation", [1, 1])


def depthwise_multiplier(attrs: dict, in_channels: int) -> int | None:
    """Filters per input channel of a depthwise convolution (one group per input channel; TFLite's
    DEPTHWISE_CONV_2D takes any multiplier), or None for a dense or otherwise grouped one."""
    return attrs["out_channels"] // in_channels if attrs["groups"] == in_channels else None


def is_depthwise(attrs: dict, in_channels: int) -> bool:
    """One filter per input channel: groups = input channels = output channels."""
    return depthwise_multiplier(attrs, in_channels) == 1


def _infer(a: dict, ins: list[Shape]) -> Shape:
    (x,) = ins
    if len(x) != 3:
        raise ShapeError(f"a convolution needs a C×H×W feature map, got shape {fmt(x)}")
    c, h, w = x
    groups, out = a["groups"], a["out_channels"]
    if c % groups or out % groups:
        raise ShapeError(f"{c} input and {out} output channels cannot be split into {groups} groups")
    (kh, kw), (sh, sw), (top, left, bottom, right) = a["kernel"], a["stride"], a["pads"]
    dh, dw = dilation(a)
    ho = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
    wo = (w + left + right - (kw - 1) * dw - 1) // sw + 1
    if ho < 1 or wo < 1:
        dilated = f" dilated by {dh}" if dh > 1 else ""
        raise ShapeError(
            f"the feature map collapses: a {kh}x{kw} kernel{dilated} with stride {sh} on a {h}×{w} input "
            f"(padded to {h + top + bottom}×{w + left + right}) leaves no output"
        )
    return (out, ho, wo)


def _params(a: dict, ins: list[Shape]) -> dict[str, Shape]:
    c = ins[0][0]
    shapes = {"weight": (a["out_channels"], c // a["groups"], *a["kernel"])}
    if a["bias"]:
        shapes["bias"] = (a["out_channels"],)
    return shapes


def _run(a: dict, p: dict, xs: list[np.ndarray]) -> np.ndarray:
    y = kernels.conv2d(xs[0], p["weight"], p.get("bias"), a["stride"], a["pads"], a["groups"], dilation(a))
    return activations.apply(a.get("fused_act"), y)


def _products(node, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    a = node.attrs
    return kernels.conv2d(x, w, None, a["stride"], a["pads"], a["groups"], dilation(a))


def _init(rng, shapes, x):  # He-normal
    weight = shapes["weight"]
    fan_in = int(np.prod(weight[1:]))
    return seeded_bias(rng, shapes, {"weight": rng.standard_normal(weight) * np.sqrt(2.0 / fan_in)})


register(
    OpDef(
        "conv",
        1,
        attrs=(
            Attr("out_channels", POSITIVE),
            Attr("kernel", PAIR),
            Attr("stride", PAIR),
            Attr("pads", PADS),
            Attr("groups", POSITIVE),
            BIAS,
            FUSED_ACT,
            Attr("dilation", PAIR, optional=True),
        ),
        infer=_infer,
        run=_run,
        error=linear_error(_products, lambda w: int(np.prod(w.shape[1:]))),
        int8=CALIBRATED,
        param_shapes=_params,
        slots=("weight", "bias"),
        init=_init,
        macs=lambda a, ins, out: prod(out) * prod(a["kernel"]) * ins[0][0] // a["groups"],
        counted_params=("weight", "bias"),
        absorbs=True,
        int8_weights=True,
        float16=float16_fused,
    )
)
