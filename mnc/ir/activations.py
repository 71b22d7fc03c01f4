"""Elementwise activations: the one place that says what each activation name computes."""
from __future__ import annotations

import numpy as np


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


ACTIVATIONS = {
    "relu": _relu,
    "relu6": _relu6,
    "identity": _identity,
}


def apply(name: str | None, x: np.ndarray) -> np.ndarray:
    return x if name is None else ACTIVATIONS[name](x)
