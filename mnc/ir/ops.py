"""The op registry: the single place that defines each IR op.

For every op it states the number of inputs, the output shape, the parameter
shapes, the cost under the project's counting conventions (DESIGN.md: MACs of
convolutions and fully connected layers; params are conv/FC weights and biases
plus batch-norm scale and shift) and the numpy kernel that is its meaning.
Shapes are per sample, batch excluded: (C, H, W) for feature maps, (F,) for vectors.
Backends translate these ops; they never redefine them.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable

import numpy as np

from mnc.ir import activations, kernels

Shape = tuple[int, ...]


class ShapeError(Exception):
    """An op cannot be applied to the shapes it receives; the message explains why."""


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: int | None  # None: any number ≥ 1
    infer: Callable[[dict, list[Shape]], Shape]
    run: Callable[[dict, dict, list[np.ndarray]], np.ndarray]
    param_shapes: Callable[[dict, list[Shape]], dict[str, Shape]] = lambda attrs, ins: {}
    macs: Callable[[dict, list[Shape], Shape], int] = lambda attrs, ins, out: 0
    # Which parameters count as "params" (batch norm's running statistics do not).
    counted_params: tuple[str, ...] = ()


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    OPS[op.name] = op
    return op


def param_count(op: OpDef, attrs: dict, in_shapes: list[Shape]) -> int:
    shapes = op.param_shapes(attrs, in_shapes)
    return sum(prod(shapes[p]) for p in op.counted_params if p in shapes)


# ---- input ----------------------------------------------------------------------

register(OpDef("input", 0, infer=lambda a, ins: tuple(a["shape"]), run=lambda a, p, xs: xs[0]))


# ---- conv -------------------------------------------------------------------------
# attrs: out_channels, kernel [kh, kw], stride [sh, sw], pads [top, left, bottom, right],
#        groups, bias (bool), fused_act (activation name or None), dilation [dh, dw] (absent: 1, 1)


def dilation(a: dict) -> list[int]:
    return a.get("dilation", [1, 1])


def _conv_infer(a: dict, ins: list[Shape]) -> Shape:
    (x,) = ins
    if len(x) != 3:
        raise ShapeError(f"a convolution needs a C×H×W feature map, got shape {_fmt(x)}")
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


def _conv_params(a: dict, ins: list[Shape]) -> dict[str, Shape]:
    c = ins[0][0]
    shapes = {"weight": (a["out_channels"], c // a["groups"], *a["kernel"])}
    if a["bias"]:
        shapes["bias"] = (a["out_channels"],)
    return shapes


def _conv_run(a: dict, p: dict, xs: list[np.ndarray]) -> np.ndarray:
    y = kernels.conv2d(xs[0], p["weight"], p.get("bias"), a["stride"], a["pads"], a["groups"], dilation(a))
    return activations.apply(a.get("fused_act"), y)


register(
    OpDef(
        "conv",
        1,
        infer=_conv_infer,
        run=_conv_run,
        param_shapes=_conv_params,
        macs=lambda a, ins, out: prod(out) * prod(a["kernel"]) * ins[0][0] // a["groups"],
        counted_params=("weight", "bias"),
    )
)


# ---- batchnorm (inference form) -------------------------------------------------------
# attrs: eps. params: gamma, beta, mean, var — per channel.

register(
    OpDef(
        "batchnorm",
        1,
        infer=lambda a, ins: ins[0],
        run=lambda a, p, xs: kernels.batchnorm(xs[0], p["gamma"], p["beta"], p["mean"], p["var"], a["eps"]),
        param_shapes=lambda a, ins: {k: (ins[0][0],) for k in ("gamma", "beta", "mean", "var")},
        counted_params=("gamma", "beta"),
    )
)


# ---- act ---------------------------------------------------------------------------
# attrs: fn (a name in mnc.ir.activations.ACTIVATIONS)

register(OpDef("act", 1, infer=lambda a, ins: ins[0], run=lambda a, p, xs: activations.apply(a["fn"], xs[0])))


# ---- add (residual) ----------------------------------------------------------------------


def _add_infer(a: dict, ins: list[Shape]) -> Shape:
    if len(set(ins)) != 1:
        raise ShapeError("cannot add tensors of different shapes: " + " and ".join(_fmt(s) for s in ins))
    return ins[0]


register(OpDef("add", None, infer=_add_infer, run=lambda a, p, xs: sum(xs[1:], xs[0])))


# ---- mul (squeeze-and-excite: a feature map times a per-channel gate) -----------------------


def _mul_infer(a: dict, ins: list[Shape]) -> Shape:
    x, gate = ins
    if len(x) != len(gate) or any(g not in (1, d) for g, d in zip(gate, x)):
        raise ShapeError(f"cannot scale a {_fmt(x)} tensor by a {_fmt(gate)} one")
    return x


register(OpDef("mul", 2, infer=_mul_infer, run=lambda a, p, xs: xs[0] * xs[1]))


# ---- pooling and reshaping ------------------------------------------------------------


def _global_pool_infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 3:
        raise ShapeError(f"global pooling needs a C×H×W feature map, got shape {_fmt(ins[0])}")
    return (ins[0][0], 1, 1)


register(OpDef("global_avgpool", 1, infer=_global_pool_infer, run=lambda a, p, xs: kernels.global_avgpool(xs[0])))

# attrs: kernel [kh, kw], stride [sh, sw]; no padding


def _avgpool_infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 3:
        raise ShapeError(f"pooling needs a C×H×W feature map, got shape {_fmt(ins[0])}")
    c, h, w = ins[0]
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    if kh > h or kw > w:
        raise ShapeError(f"a {kh}×{kw} pooling window does not fit in a {h}×{w} feature map")
    return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)


register(
    OpDef("avgpool", 1, infer=_avgpool_infer, run=lambda a, p, xs: kernels.avgpool(xs[0], a["kernel"], a["stride"]))
)


# ---- resize: bilinear, half-pixel centres (align_corners false) -------------------------
# attrs: size [H, W]


def _resize_infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 3:
        raise ShapeError(f"upsampling needs a C×H×W feature map, got shape {_fmt(ins[0])}")
    h, w = a["size"]
    if h < 1 or w < 1 or h > MAX_RESIZE or w > MAX_RESIZE:
        raise ShapeError(f"cannot resample a {_fmt(ins[0][1:])} map to {h}×{w}")
    return (ins[0][0], h, w)


MAX_RESIZE = 16384
register(OpDef("resize", 1, infer=_resize_infer, run=lambda a, p, xs: kernels.resize_bilinear(xs[0], a["size"])))


# ---- concat: along the first per-sample axis (channels of maps, rows of predictions) -------


def _concat_infer(a: dict, ins: list[Shape]) -> Shape:
    rest = {tuple(s[1:]) for s in ins}
    if len(rest) != 1 or len({len(s) for s in ins}) != 1:
        raise ShapeError(
            "cannot concatenate tensors whose shapes differ beyond the first axis: " + ", ".join(_fmt(s) for s in ins)
        )
    return (sum(s[0] for s in ins), *ins[0][1:])


register(OpDef("concat", None, infer=_concat_infer, run=lambda a, p, xs: np.concatenate(xs, axis=1)))


# ---- per_anchor: a detection head's (A·K, H, W) map → (H·W·A, K) rows -----------------
# attrs: columns (K)


def _per_anchor_infer(a: dict, ins: list[Shape]) -> Shape:
    k = a["columns"]
    if len(ins[0]) != 3 or ins[0][0] % k:
        raise ShapeError(f"cannot split a {_fmt(ins[0])} map into rows of {k} values per anchor")
    c, h, w = ins[0]
    return (h * w * c // k, k)


register(OpDef("per_anchor", 1, infer=_per_anchor_infer, run=lambda a, p, xs: kernels.per_anchor(xs[0], a["columns"])))

register(
    OpDef(
        "flatten",
        1,
        infer=lambda a, ins: (prod(ins[0]),),
        run=lambda a, p, xs: xs[0].reshape(xs[0].shape[0], -1),
    )
)


# ---- fc (fully connected; weight [out, in]) ---------------------------------------------


def _fc_infer(a: dict, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 1:
        raise ShapeError(f"a fully connected layer needs a flat vector, got shape {_fmt(ins[0])}")
    return (a["out_features"],)


def _fc_params(a: dict, ins: list[Shape]) -> dict[str, Shape]:
    shapes = {"weight": (a["out_features"], ins[0][0])}
    if a["bias"]:
        shapes["bias"] = (a["out_features"],)
    return shapes


def _fc_run(a: dict, p: dict, xs: list[np.ndarray]) -> np.ndarray:
    return activations.apply(a.get("fused_act"), kernels.fc(xs[0], p["weight"], p.get("bias")))


register(
    OpDef(
        "fc",
        1,
        infer=_fc_infer,
        run=_fc_run,
        param_shapes=_fc_params,
        macs=lambda a, ins, out: ins[0][0] * a["out_features"],
        counted_params=("weight", "bias"),
    )
)


# ---- softmax over channels -------------------------------------------------------------

register(OpDef("softmax", 1, infer=lambda a, ins: ins[0], run=lambda a, p, xs: kernels.softmax(xs[0], axis=1)))


def _fmt(shape: Shape) -> str:
    return "×".join(map(str, shape)) if shape else "scalar"
