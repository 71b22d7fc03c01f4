"""Elementwise activations: the one place that says what each activation name computes."""
from __future__ import annotations

import numpy as np


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))  # = 1/(1 + e^-x), without overflow for large |x|


def _hsigmoid(x: np.ndarray) -> np.ndarray:
    # MobileNetV3's hard sigmoid, relu6(x + 3) / 6 (not Keras's 0.2·x + 0.5).
    return np.clip(x + 3, 0, 6) / 6


def _hswish(x: np.ndarray) -> np.ndarray:
    return x * _hsigmoid(x)


ACTIVATIONS = {
    "relu": _relu,
    "relu6": _relu6,
    "hswish": _hswish,
    "hsigmoid": _hsigmoid,
    "sigmoid": _sigmoid,
    "identity": _identity,
}


def apply(name: str | None, x: np.ndarray) -> np.ndarray:
    return x if name is None else ACTIVATIONS[name](x)
