"""The activation registry: the one place that says which activations exist, what each computes,
the words a spec may use for it, whether a conv/fc can carry it fused, and how an error in its
input can grow through it (its steepest slope near a value, which the derived rounding bounds of
mnc/verification/bounds.py carry through the network).

The spec language's words, the `activation` setting's choices, help and error texts, the set
`fuse_act` fuses and the table in docs/spec-language.md all derive from ACTIVATIONS; each backend
has a lowering table keyed by these names (a test checks that every backend covers all of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mnc.ir.roundoff import FP16_TINY, FP16_U, TOLERANCE_SIGMAS


@dataclass(frozen=True)
class Activation:
    name: str  # the IR name: an `act` node's fn, a conv/fc's fused_act
    function: Callable[[np.ndarray], np.ndarray]
    formula: str
    # (x, lo, hi) → the steepest |slope| anywhere in [lo, hi] around x, elementwise: how much an input
    # error can grow through it there (0 where it is flat, as ReLU below zero). No default: an
    # activation whose slope is not stated cannot be registered, so no bound silently takes it as 1.
    steepest_slope: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    aliases: tuple[str, ...] = ()  # other words a spec may write (the papers' RE and HS)
    fusable: bool = True  # may become a conv/fc's fused_act
    # x → what evaluating it in float16 errs by beyond rounding its result: a float16 program holds its
    # constants in float16 (None: nothing beyond the rounding).
    float16_constants_error: Callable[[np.ndarray], np.ndarray] | None = None


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))  # = 1/(1 + e^-x), without overflow for large |x|


def _hsigmoid(x: np.ndarray) -> np.ndarray:
    # MobileNetV3's hard sigmoid, relu6(x + 3) / 6 (not Keras's 0.2·x + 0.5).
    return np.clip(x + 3, 0, 6) / 6


def _hswish(x: np.ndarray) -> np.ndarray:
    return x * _hsigmoid(x)


def _silu(x: np.ndarray) -> np.ndarray:
    return x * _sigmoid(x)


_erf = np.frompyfunc(math.erf, 1, 1)  # numpy has none; the C library's, to double precision


def _gelu(x: np.ndarray) -> np.ndarray:
    """x·Φ(x), with the normal distribution's exact Φ (erf), as PyTorch's and Keras's default GELU."""
    x = np.asarray(x)
    erf = _erf(x.astype(np.float64) / math.sqrt(2)).astype(np.float64)
    return (0.5 * x.astype(np.float64) * (1 + erf)).astype(np.result_type(x, np.float32))


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _relu_slope(x, lo, hi):
    return (hi > 0).astype(np.float64)


def _relu6_slope(x, lo, hi):
    return ((hi > 0) & (lo < 6)).astype(np.float64)


def _hsigmoid_slope(x, lo, hi):
    return ((hi > -3) & (lo < 3)) / 6.0


def _hswish_slope(x, lo, hi):  # slope 0 below −3, (2x + 3)/6 between, 1 above 3: at most 1.5, just below 3
    def at(v):
        return np.where(v < -3, 0.0, np.where(v > 3, 1.0, np.abs(2 * v + 3) / 6))

    steepest = np.maximum(at(lo), at(hi))
    steepest = np.where((lo < -3) & (hi > -3), np.maximum(steepest, 0.5), steepest)  # −0.5 just above −3
    return np.where((lo < 3) & (hi > 3), 1.5, steepest)


def _sigmoid_slope(x, lo, hi):  # σ(1 − σ): 1/4 at 0, falling either side
    nearest = np.where(lo > 0, lo, np.where(hi < 0, hi, 0.0))  # the point of [lo, hi] nearest 0
    s = _sigmoid(nearest)
    return s * (1 - s)


# SiLU's slope σ(x)·(1 + x·(1 − σ(x))) falls from 0 to its least, −0.09984, at x = −2.3994, rises through
# 0.5 at 0 to its greatest, 1.09984, at x = 2.3994, and falls back to 1: on an interval its steepest
# |slope| is at an end or at one of those two points inside.
SILU_TURNS = ((-2.399357280515467, 0.0999), (2.399357280515467, 1.0999))


def _silu_derivative(v):
    s = _sigmoid(v)
    return s * (1 + v * (1 - s))


def _silu_slope(x, lo, hi):
    return _steepest(_silu_derivative, SILU_TURNS, lo, hi)


# GELU's slope Φ(x) + x·φ(x) has the same shape: its least, −0.128904, at x = −√2, its greatest,
# 1.128904, at x = √2.
GELU_TURNS = ((-math.sqrt(2), 0.128905), (math.sqrt(2), 1.128905))


def _gelu_derivative(v):
    v = np.asarray(v, np.float64)
    return 0.5 * (1 + _erf(v / math.sqrt(2)).astype(np.float64)) + v * np.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)


def _gelu_slope(x, lo, hi):
    return _steepest(_gelu_derivative, GELU_TURNS, lo, hi)


def _steepest(derivative, turns, lo, hi):
    """The steepest |slope| on [lo, hi] of a smooth activation whose slope turns only at `turns`
    (point, |slope| there rounded up): at an end, or at a turn inside."""
    steepest = np.maximum(np.abs(derivative(lo)), np.abs(derivative(hi)))
    for turn, magnitude in turns:
        steepest = np.where((lo < turn) & (hi > turn), np.maximum(steepest, magnitude), steepest)
    return steepest


def _identity_slope(x, lo, hi):
    return np.ones_like(x)


# A float16 program's hard sigmoid multiplies by 1/6 held in float16, which is off by this much.
HSIGMOID_SLOPE_ERROR = abs(float(np.float16(1.0 / 6.0)) - 1.0 / 6.0)


def _hsigmoid_float16(x):
    return HSIGMOID_SLOPE_ERROR * np.abs(x)


def _hswish_float16(x):  # x times the gate, whose own rounding counts too
    return np.abs(x) * (_hsigmoid_float16(x) + FP16_U) + FP16_TINY


IDENTITY = "identity"
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("relu", _relu, "max(x, 0)", _relu_slope, aliases=("re",)),
        Activation("relu6", _relu6, "min(max(x, 0), 6)", _relu6_slope),
        Activation(
            "hswish",
            _hswish,
            "x·relu6(x + 3)/6 (MobileNetV3's hard swish)",
            _hswish_slope,
            aliases=("hs", "hardswish", "h_swish"),
            float16_constants_error=_hswish_float16,
        ),
        Activation(
            "hsigmoid",
            _hsigmoid,
            "relu6(x + 3)/6 (MobileNetV3's; not Keras's 0.2·x + 0.5)",
            _hsigmoid_slope,
            aliases=("hardsigmoid",),
            float16_constants_error=_hsigmoid_float16,
        ),
        Activation("sigmoid", _sigmoid, "1/(1 + e^−x)", _sigmoid_slope),
        Activation("gelu", _gelu, "x·Φ(x), Φ by erf (GELU: MobileViT, EfficientFormer)", _gelu_slope),
        Activation(
            "silu", _silu, "x·sigmoid(x) (SiLU, swish: EfficientNet, MobileViT)", _silu_slope, aliases=("swish",)
        ),
        # No activation. Specs write none/linear/identity; cleanup removes identity `act` nodes.
        Activation(IDENTITY, _identity, "x", _identity_slope, aliases=("none", "linear"), fusable=False),
    ]
}

# The activations a layer can have (and the spec's `activation` setting can name).
NONLINEAR = tuple(name for name in ACTIVATIONS if name != IDENTITY)
FUSABLE = tuple(name for name, a in ACTIVATIONS.items() if a.fusable)
# Every word a spec may write for an activation (lower case) → its IR name.
WORDS: dict[str, str] = {word: a.name for a in ACTIVATIONS.values() for word in (a.name, *a.aliases)}


def apply(name: str | None, x: np.ndarray) -> np.ndarray:
    return x if name is None else ACTIVATIONS[name].function(x)


def slope(name: str, x: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The steepest slope of an activation anywhere within TOLERANCE_SIGMAS standard deviations of x."""
    lo, hi = x - TOLERANCE_SIGMAS * sigma, x + TOLERANCE_SIGMAS * sigma
    return ACTIVATIONS[name].steepest_slope(x, lo, hi)


def describe_words() -> str:
    """The accepted words, for help and error messages: 'relu (re), relu6, …'."""
    return ", ".join(a.name + (f" ({', '.join(a.aliases)})" if a.aliases else "") for a in ACTIVATIONS.values())


def markdown_table() -> str:
    """The activation table of docs/spec-language.md (a test keeps the two equal)."""
    rows = ["| activation | also written | computes | fused into conv/fc |", "|---|---|---|---|"]
    for a in ACTIVATIONS.values():
        aliases = ", ".join(f"`{w}`" for w in a.aliases) or "-"
        rows.append(f"| `{a.name}` | {aliases} | {a.formula} | {'yes' if a.fusable else 'no'} |")
    return "\n".join(rows)
