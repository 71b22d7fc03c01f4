"""The int8 scheme, one place for its arithmetic.

- Activations: per-tensor affine uint8, the range widened to contain 0, an integer zero point.
- Weights: per-output-channel symmetric int8 with zero point 0, in [-(2^(b-1) - 1), 2^(b-1) - 1]
  for b weight bits (8 by default; a target may ask for fewer, see its Int8Plan).
- Bias: int32 with scale input_scale × weight_scale[c]. A bias too large for int32 is not clipped:
  that channel's weight scale grows until the bias fits, and it is reported.
"""

from __future__ import annotations

import numpy as np

from mnc.ir.node import Affine

INT32_MAX = 2**31 - 1
ACTIVATION_LEVELS = 255  # uint8


def activation_params(low: float, high: float) -> Affine:
    """uint8 parameters for values in [low, high]."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low <= 0:
        return Affine(1.0, 0)  # an all-zero tensor: any scale represents it
    scale = (high - low) / ACTIVATION_LEVELS
    return Affine(scale, int(np.clip(round(-low / scale), 0, ACTIVATION_LEVELS)))


def fake_quantize(x: np.ndarray, p: Affine) -> np.ndarray:
    """Quantise to uint8 and back (round half to even, as ONNX QuantizeLinear does)."""
    q = np.clip(np.round(x / p.scale) + p.zero_point, 0, ACTIVATION_LEVELS)
    return (q - p.zero_point) * p.scale


def weight_qmax(bits: int) -> int:
    """The largest weight magnitude with `bits` bits, symmetric: 127 for 8, 63 for 7."""
    return 2 ** (bits - 1) - 1


def weight_params(weight: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, per-output-channel scales) for weights [out, …]."""
    qmax = weight_qmax(bits)
    w = weight.astype(np.float64)
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / qmax, 1.0)  # a channel of zeros gets a harmless scale
    q = np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -qmax, qmax).astype(np.int8)
    return q, scale


def bias_params(bias: np.ndarray, input_scale: float, weight_scale: np.ndarray, weight: np.ndarray, bits: int):
    """(int32 bias, its scales, weights, weight scales, channels whose weight scale had to grow)."""
    b = bias.astype(np.float64)
    needed = np.abs(b) / (input_scale * INT32_MAX)
    grown = np.nonzero(needed > weight_scale)[0]
    if grown.size:
        weight_scale = weight_scale.copy()
        weight_scale[grown] = needed[grown] * (1 + 1e-6)
        qmax = weight_qmax(bits)
        shape = (-1, *[1] * (weight.ndim - 1))
        w = np.clip(np.round(weight.astype(np.float64) / weight_scale.reshape(shape)), -qmax, qmax)
        weight_q = w.astype(np.int8)
    else:
        weight_q = None
    scale = input_scale * weight_scale
    q = np.round(b / scale)
    assert np.all(np.abs(q) <= INT32_MAX)
    return q.astype(np.int32), scale, weight_q, weight_scale, grown.tolist()
