"""The image input every target offers (--image-input): the model takes 8-bit pixels and applies the
spec's per-channel normalisation, (p/255 − mean)/std, itself, as one multiply and one add whose
constants come from here."""

from __future__ import annotations

import numpy as np

PIXEL_MAX = 255.0


def normalisation(mean, std, pixel_max: float = PIXEL_MAX, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift), one float32 value per channel: p·scale + shift = (p/pixel_max − mean)/std.
    pixel_max 1: the pixels arrive divided by 255 already (Core ML's ImageType scales them).
    dtype: the arithmetic before the rounding to float32 (Core ML's constants have always been
    computed in float32, and an artifact's bytes must not change)."""
    mean, std = np.asarray(mean, dtype), np.asarray(std, dtype)
    return (1.0 / (pixel_max * std)).astype(np.float32), (-mean / std).astype(np.float32)
