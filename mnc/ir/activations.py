"""The activation registry: the one place that says which activations exist, what each computes,
the words a spec may use for it, and whether a conv/fc can carry it fused.

The spec language's words, the `activation` setting's choices, help and error texts, the set
`fuse_act` fuses and the table in docs/spec-language.md all derive from ACTIVATIONS; each backend
has a lowering table keyed by these names (a test checks that every backend covers all of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Activation:
    name: str  # the IR name: an `act` node's fn, a conv/fc's fused_act
    function: Callable[[np.ndarray], np.ndarray]
    formula: str
    aliases: tuple[str, ...] = ()  # other words a spec may write (the papers' RE and HS)
    fusable: bool = True  # may become a conv/fc's fused_act


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


def _identity(x: np.ndarray) -> np.ndarray:
    return x


IDENTITY = "identity"
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("relu", _relu, "max(x, 0)", aliases=("re",)),
        Activation("relu6", _relu6, "min(max(x, 0), 6)"),
        Activation(
            "hswish", _hswish, "x·relu6(x + 3)/6 (MobileNetV3's hard swish)", aliases=("hs", "hardswish", "h_swish")
        ),
        Activation(
            "hsigmoid", _hsigmoid, "relu6(x + 3)/6 (MobileNetV3's; not Keras's 0.2·x + 0.5)", aliases=("hardsigmoid",)
        ),
        Activation("sigmoid", _sigmoid, "1/(1 + e^−x)"),
        # No activation. Specs write none/linear/identity; cleanup removes identity `act` nodes.
        Activation(IDENTITY, _identity, "x", aliases=("none", "linear"), fusable=False),
    ]
}

# The activations a layer can have (and the spec's `activation` setting can name).
NONLINEAR = tuple(name for name in ACTIVATIONS if name != IDENTITY)
FUSABLE = tuple(name for name, a in ACTIVATIONS.items() if a.fusable)
# Every word a spec may write for an activation (lower case) → its IR name.
WORDS: dict[str, str] = {word: a.name for a in ACTIVATIONS.values() for word in (a.name, *a.aliases)}


def apply(name: str | None, x: np.ndarray) -> np.ndarray:
    return x if name is None else ACTIVATIONS[name].function(x)


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
