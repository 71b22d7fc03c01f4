"""Reference numpy kernels for the IR ops (NCHW). Written for clarity first, then enough speed
that a MobileNet at 224×224 runs in about a second in float64."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv2d(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride, pads, groups: int, dilation=(1, 1)
) -> np.ndarray:
    """Cross-correlation with explicit pads (top, left, bottom, right) and dilation, like ONNX Conv."""
    top, left, bottom, right = pads
    sh, sw = stride
    if any(pads):  # np.pad copies even when there is nothing to pad
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    dh, dw = dilation
    ho, wo = (h - (kh - 1) * dh - 1) // sh + 1, (wd - (kw - 1) * dw - 1) // sw + 1
    if groups == c == o and cg == 1:
        out = _depthwise(x, w, sh, sw, ho, wo, dh, dw)
    elif groups == 1:
        out = _dense(x, w, sh, sw, ho, wo, dh, dw)
    else:
        og = o // groups
        out = np.concatenate(
            [
                _dense(x[:, g * cg : (g + 1) * cg], w[g * og : (g + 1) * og], sh, sw, ho, wo, dh, dw)
                for g in range(groups)
            ],
            axis=1,
        )
    if b is not None:
        out = out + b.reshape(1, -1, 1, 1)
    return out


def _dense(x, w, sh, sw, ho, wo, dh=1, dw=1):
    o, c, kh, kw = w.shape
    if kh == kw == 1:
        xs = x[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
        n = xs.shape[0]
        return (w[:, :, 0, 0] @ xs.reshape(n, c, ho * wo)).reshape(n, o, ho, wo)
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    windows = sliding_window_view(x, span, axis=(2, 3))[:, :, ::sh, ::sw][:, :, :ho, :wo, ::dh, ::dw]
    out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))  # n, ho, wo, o
    return out.transpose(0, 3, 1, 2)


# A depthwise convolution reads each input plane once per tap: taken a few planes at a time (input and
# output within this many bytes), the taps find them in the core's cache. Each element's sum keeps its
# order, so the result is the same to the bit.
_DEPTHWISE_BLOCK_BYTES = 1 << 18


def _depthwise(x, w, sh, sw, ho, wo, dh=1, dw=1):
    n, c = x.shape[:2]
    kh, kw = w.shape[2:]
    out = np.zeros((n, c, ho, wo), dtype=np.result_type(x, w))
    per = max(1, _DEPTHWISE_BLOCK_BYTES // (out.itemsize * (x.shape[2] * x.shape[3] + ho * wo)))
    for b in range(n):
        for c0 in range(0, c, per):
            xb, ob, wb = x[b : b + 1, c0 : c0 + per], out[b : b + 1, c0 : c0 + per], w[c0 : c0 + per, 0]
            for i in range(kh):
                for j in range(kw):
                    top, left = i * dh, j * dw
                    patch = xb[:, :, top : top + (ho - 1) * sh + 1 : sh, left : left + (wo - 1) * sw + 1 : sw]
                    ob += patch * wb[:, i, j].reshape(1, -1, 1, 1)
    return out


def batchnorm(x, gamma, beta, mean, var, eps: float):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = gamma / np.sqrt(var + eps)
    return x * scale.reshape(shape) + (beta - mean * scale).reshape(shape)


def global_avgpool(x):
    return x.mean(axis=(2, 3), keepdims=True)


def avgpool(x, kernel, stride):
    """Average over k×k windows at a stride, without padding."""
    (kh, kw), (sh, sw) = kernel, stride
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw].mean(axis=(4, 5))


def bilinear_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: the two input positions it reads and the weight of the second,
    with half-pixel centres (PyTorch's align_corners=False, ONNX's half_pixel, TensorFlow's
    half_pixel_centers): source = (out + 0.5)·in/out − 0.5, clamped to the input."""
    src = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, src - lo


def resize_bilinear(x, size, squared: bool = False):
    """Bilinear resampling of the spatial axes to `size` (H, W); `squared`: with the weights squared
    (how independent errors in x carry into the result)."""
    (h_lo, h_hi, h_t), (w_lo, w_hi, w_t) = bilinear_weights(x.shape[2], size[0]), bilinear_weights(x.shape[3], size[1])
    power = 2 if squared else 1
    rows = x[:, :, h_lo] * ((1 - h_t) ** power)[:, None] + x[:, :, h_hi] * (h_t**power)[:, None]
    return rows[..., w_lo] * (1 - w_t) ** power + rows[..., w_hi] * w_t**power


def per_anchor(x, columns: int):
    """(N, A·K, H, W) → (N, H·W·A, K): a detection head's per-location predictions as one row per
    anchor, ordered by position, then anchor (torchvision's SSD heads)."""
    n, ak, h, w = x.shape
    return x.reshape(n, ak // columns, columns, h, w).transpose(0, 3, 4, 1, 2).reshape(n, -1, columns)


def fc(x, w, b):
    out = x @ w.T
    return out if b is None else out + b


def softmax(x, axis: int = 1):
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
