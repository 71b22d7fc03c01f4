"""What a TFLite artifact is built with (from the target flags and the spec), without the format's
libraries: the command line reads the choices from here."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16")
# The activations TFLite's conv, fully connected and add kernels can carry fused (in int8 too); the
# others keep a tensor of their own: int8 needs its range.
FUSED_ACTIVATIONS = ("relu", "relu6")


@dataclass(frozen=True)
class TFLiteOptions:
    precision: str = "fp32"
    image_input: bool = False
    labels: tuple[str, ...] | None = None
    description: str = ""
