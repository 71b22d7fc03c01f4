"""The node record: every field an IR node has, quantisation parameters included.

    op       name of an op in mnc.ir.ops.OPS
    attrs    op attributes (kernel, stride, explicit pads, groups, fused activation, eps, …)
    params   numpy arrays in canonical layout (conv weight OIHW, fc weight [out, in]); empty
             until weights are initialised or loaded
    src      mnc.errors.Loc of the spec text that produced the node
    shape    per-sample output shape, filled by shape inference
    qparams  how the node's tensors are quantised, once the quantize_int8 pass has run

The numbers in a QParams are decided by mnc/quant (the scheme); this module only declares
their form, and Graph.validate checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mnc.errors import Loc

UINT8 = (0, 255)


@dataclass(frozen=True)
class Affine:
    """A per-tensor affine uint8 quantisation: real = (q − zero_point)·scale."""

    scale: float
    zero_point: int

    def as_dict(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class ChannelQuantized:
    """Integers with one scale per output channel and zero point 0: int8 weights or int32 biases."""

    q: np.ndarray
    scale: np.ndarray
    bits: int | None = None  # weights: the bits their range uses (7 or 8)

    def dequantized(self) -> np.ndarray:
        """The real values the integers stand for, in float64."""
        return self.q.astype(np.float64) * self.scale.reshape(-1, *[1] * (self.q.ndim - 1))


@dataclass(frozen=True)
class QParams:
    output: Affine
    weight: ChannelQuantized | None = None
    bias: ChannelQuantized | None = None

    def dequantized_params(self) -> dict[str, np.ndarray]:
        """The weight and bias as the numbers the quantised model computes with (float64)."""
        return {k: t.dequantized() for k, t in (("weight", self.weight), ("bias", self.bias)) if t is not None}


@dataclass
class Node:
    op: str
    attrs: dict
    params: dict[str, np.ndarray]
    src: Loc | None
    shape: tuple[int, ...] | None = None
    qparams: QParams | None = field(default=None)


class QParamsError(Exception):
    pass


def check_qparams(node: Node) -> None:
    """Raise QParamsError if a node's quantisation parameters are not of the declared form."""
    q = node.qparams
    if not isinstance(q, QParams) or not isinstance(q.output, Affine):
        raise QParamsError(f"qparams must be a QParams with an Affine output, got {type(q).__name__}")
    if not (np.isfinite(q.output.scale) and q.output.scale > 0):
        raise QParamsError(f"output scale {q.output.scale} is not a positive number")
    if not UINT8[0] <= q.output.zero_point <= UINT8[1]:
        raise QParamsError(f"output zero point {q.output.zero_point} is outside uint8")
    for key, dtype in (("weight", np.int8), ("bias", np.int32)):
        t = getattr(q, key)
        if t is None:
            continue
        if key not in node.params:
            raise QParamsError(f"a quantised {key} for an op without one")
        if t.q.dtype != dtype or t.q.shape != node.params[key].shape:
            raise QParamsError(
                f"quantised {key} is {t.q.dtype}{list(t.q.shape)}, expected "
                f"{np.dtype(dtype)}{list(node.params[key].shape)}"
            )
        if t.scale.shape != (t.q.shape[0],) or not np.all(t.scale > 0):
            raise QParamsError(f"{key} scales must be positive, one per output channel")
