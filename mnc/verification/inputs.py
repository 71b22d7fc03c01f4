"""What verification feeds an artifact and its reference: seeded image-like samples from their
own random stream, as 8-bit pixels and as the network's normalised input."""

from __future__ import annotations

import numpy as np

from mnc.samples import STREAM_VERIFICATION, normalise, sample_pixels

FLOAT_BATCH = 2
INT8_BATCH = 16  # quantised artifacts are compared statistically: more samples


def verification_inputs(
    settings, resolution: int, seed: int, batch: int = FLOAT_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """(8-bit pixels, their normalised values)."""
    pixels = sample_pixels(settings.input_channels, resolution, batch, seed, STREAM_VERIFICATION)
    return pixels, normalise(settings, pixels)
