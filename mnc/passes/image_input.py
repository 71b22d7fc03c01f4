"""The image input every target offers (--image-input) as a rewrite: the model takes 8-bit pixels
and applies the spec's per-channel normalisation, (p/255 − mean)/std, itself.

The graph's input is marked as taking pixels (its `pixel_scale`: what the runtime multiplies them
by on the way in) and an `affine` node after it applies the normalisation, its constants from
`normalisation`. A target lowers only how its runtime takes the pixels (ONNX and TFLite cast
uint8 to float; Core ML's image type scales them by 1/255 itself, so its affine's constants
assume pixels up to 1), and the affine as it lowers any. In an int8 graph the input's grid moves
to the affine, whose output is the value it described; the pixels themselves are not quantised."""

from __future__ import annotations

import numpy as np

from mnc.ir.graph import Graph
from mnc.passes.rewriting import SAMPLES, Region, Rewrite

PIXEL_MAX = 255.0
NODE = "input.normalised"  # no spec layer is named like this (theirs are stage{i}.block{j}.…)


def normalisation(mean, std, pixel_max: float = PIXEL_MAX, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift), one float32 value per channel: p·scale + shift = (p/pixel_max − mean)/std.
    pixel_max 1: the pixels arrive divided by 255 already (Core ML's ImageType scales them).
    dtype: the arithmetic before the rounding to float32 (Core ML's constants have always been
    computed in float32, and an artifact's bytes must not change)."""
    mean, std = np.asarray(mean, dtype), np.asarray(std, dtype)
    return (1.0 / (pixel_max * std)).astype(np.float32), (-mean / std).astype(np.float32)


def _normalise_pixels(graph: Graph, *, mean, std, pixel_max: float = PIXEL_MAX, arithmetic: str = "float64"):
    (pixels,) = graph.inputs
    node = graph.node(pixels)
    scale, shift = normalisation(mean, std, pixel_max, np.dtype(arithmetic))
    graph.add(NODE, "affine", params={"scale": scale, "shift": shift}, src=node.src)
    graph.replace_uses(pixels, NODE)
    graph.connect(pixels, NODE, 0)
    graph.outputs = [NODE if o == pixels else o for o in graph.outputs]
    affine = graph.node(NODE)
    affine.shape, affine.qparams, node.qparams = node.shape, node.qparams, None
    node.attrs["pixel_scale"] = pixel_max / PIXEL_MAX

    def feed(rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:
        """8-bit pixels, and the spec's preprocessing of them computed apart from `normalisation`."""
        p = rng.integers(0, int(PIXEL_MAX) + 1, (SAMPLES, *shape)).astype(np.float64)
        channel = (1, -1) + (1,) * (len(shape) - 1)
        return p, (p / PIXEL_MAX - np.reshape(mean, channel)) / np.reshape(std, channel)

    return [Region((pixels, NODE), (pixels,), feed)]


REWRITE = Rewrite(
    "image_input",
    "the model takes 8-bit pixels and normalises them, (p/255 − mean)/std per channel, in an affine node",
    _normalise_pixels,
)
