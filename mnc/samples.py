"""Seeded, image-like inputs: what weight calibration and verification feed the network."""

from __future__ import annotations

import numpy as np

# Independent random streams per purpose, so calibrating the weights and checking the
# artifact never see the same images.
STREAM_CALIBRATION = 0
STREAM_VERIFICATION = 1


def sample_pixels(channels: int, resolution: int, batch: int, seed: int, stream: int) -> np.ndarray:
    """8-bit pixel values (as float32, NCHW) with image-like spatial correlation: coarse blobs
    plus fine texture. What an image input of a Core ML model receives."""
    rng = np.random.default_rng([seed, stream])
    coarse_size = max(1, -(-resolution // 8))
    coarse = rng.uniform(0, 1, (batch, channels, coarse_size, coarse_size))
    pixels = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)[:, :, :resolution, :resolution]
    pixels = np.clip(0.8 * pixels + 0.2 * rng.uniform(0, 1, (batch, channels, resolution, resolution)), 0, 1)
    return np.round(pixels * 255).astype(np.float32)


def normalise(settings, pixels: np.ndarray) -> np.ndarray:
    """The spec's preprocessing: pixels/255, minus mean, divided by std, per channel."""
    c = settings.input_channels
    mean = np.asarray(settings.mean, dtype=np.float64).reshape(1, c, 1, 1)
    std = np.asarray(settings.std, dtype=np.float64).reshape(1, c, 1, 1)
    return ((pixels / 255.0 - mean) / std).astype(np.float32)


def sample_images(settings, resolution: int, batch: int, seed: int, stream: int) -> np.ndarray:
    """Normalised network inputs (float32, NCHW) made from sample_pixels."""
    return normalise(settings, sample_pixels(settings.input_channels, resolution, batch, seed, stream))
