"""How quantised results are measured against float ones."""

from __future__ import annotations

import numpy as np


def sqnr(reference: np.ndarray, actual: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB: how quantised results are compared."""
    r = np.asarray(reference, dtype=np.float64)
    noise = float(((r - actual) ** 2).sum())
    return float("inf") if noise == 0 else 10 * float(np.log10(max(float((r**2).sum()), 1e-300) / noise))
