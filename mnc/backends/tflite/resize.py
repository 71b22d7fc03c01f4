"""How far TFLite's int8 bilinear resize may be from the exact one: its sampling positions are
1/1024-pixel fixed point (ResizeBilinearInteger), so an int8 model's resize layer is allowed that
much beyond the usual rounding step in the layer-by-layer check."""

from __future__ import annotations

import numpy as np


def resize_positions(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel samples the input along one axis: exactly (half-pixel centres), and
    as TFLite's integer kernel does (ResizeBilinearInteger: the scale rounded to 1/1024 of a pixel,
    positions in 1/1024 units), both clamped to the input as both kernels clamp them."""
    i = np.arange(size_out)
    exact = (i + 0.5) * size_in / size_out - 0.5
    scale_10 = (1024 * size_in + size_out // 2) // size_out
    fixed = (i * scale_10 + scale_10 // 2 - 512) / 1024
    return np.clip(exact, 0, size_in - 1), np.clip(fixed, 0, size_in - 1)


def resize_allowance(x: np.ndarray, size) -> np.ndarray:
    """How far TFLite's int8 bilinear resize may be from the exact one, per output element, in the
    input's units: bilinear interpolation moves by at most |Δposition| × the largest step between
    neighbouring input pixels it spans, along each axis (TFLite samples at fixed-point positions
    that differ from the exact ones unless 1024·in/out is an even integer)."""
    n, c, h, w = x.shape
    (ey, ry), (ex, rx) = _spans(h, size[0]), _spans(w, size[1])
    # The input rows and columns either position reads (for the step across the other axis).
    read_rows = np.unique(
        np.concatenate(
            [np.minimum(np.floor(p).astype(int) + k, h - 1) for p in resize_positions(h, size[0]) for k in (0, 1)]
        ).reshape(-1, size[0]),
        axis=0,
    )
    read_cols = np.unique(
        np.concatenate(
            [np.minimum(np.floor(p).astype(int) + k, w - 1) for p in resize_positions(w, size[1]) for k in (0, 1)]
        ).reshape(-1, size[1]),
        axis=0,
    )
    out = np.empty((n, c, *size), np.float32)
    for s in range(n):  # one sample at a time: a 520² map of 21 classes is 23 MB in float32
        sample = np.asarray(x[s], np.float32)
        dy = np.abs(np.diff(sample, axis=1)) if h > 1 else np.zeros((c, 1, w), np.float32)
        dx = np.abs(np.diff(sample, axis=2)) if w > 1 else np.zeros((c, h, 1), np.float32)
        slope_y = np.zeros((c, *size), np.float32)
        for rows in ry:  # steps between input rows r and r + 1, for each r either position spans
            for cols in read_cols:
                slope_y = np.maximum(slope_y, dy[:, rows][:, :, cols])
        slope_x = np.zeros((c, *size), np.float32)
        for cols in rx:
            for rows in read_rows:
                slope_x = np.maximum(slope_x, dx[:, rows][:, :, cols])
        out[s] = ey[:, None] * slope_y + ex[None, :] * slope_x
    return out


def _spans(size_in: int, size_out: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Along one axis: |exact − TFLite position| per output, and the neighbour steps (r → r + 1,
    as indices r into the input's differences) that the interval between them crosses."""
    exact, fixed = resize_positions(size_in, size_out)
    last = max(size_in - 2, 0)  # the last step index
    lo = np.clip(np.floor(np.minimum(exact, fixed)).astype(int), 0, last)
    hi = np.maximum(np.clip(np.ceil(np.maximum(exact, fixed)).astype(int) - 1, 0, last), lo)
    return np.abs(exact - fixed), [np.minimum(lo + k, hi) for k in range(int((hi - lo).max()) + 1)]
