"""Seeded, image-like inputs: what weight calibration and verification feed the network."""
from __future__ import annotations

import numpy as np

# Independent random streams per purpose, so calibrating the weights and checking the
# artifact never see the same images.
STREAM_CALIBRATION = 0
STREAM_VERIFICATION = 1


def sample_images(settings, resolution: int, batch: int, seed: int, stream: int) -> np.ndarray:
    """Pixels in [0, 1] with image-like spatial correlation (coarse blobs plus fine texture),
    normalised with the spec's mean and std. Float32, NCHW."""
    rng = np.random.default_rng([seed, stream])
    c = settings.input_channels
    coarse_size = max(1, -(-resolution // 8))
    coarse = rng.uniform(0, 1, (batch, c, coarse_size, coarse_size))
    pixels = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)[:, :, :resolution, :resolution]
    pixels = np.clip(0.8 * pixels + 0.2 * rng.uniform(0, 1, (batch, c, resolution, resolution)), 0, 1)
    mean = np.asarray(settings.mean).reshape(1, c, 1, 1)
    std = np.asarray(settings.std).reshape(1, c, 1, 1)
    return ((pixels - mean) / std).astype(np.float32)
