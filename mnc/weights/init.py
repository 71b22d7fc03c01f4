"""Deterministic weights from a seed, with realistic activations.

Random weights alone make a degenerate network (activations explode or vanish with
depth, and softmax saturates), and checking a degenerate network proves little. So
convolutions get He-normal weights, and every batch norm takes its running statistics
from the activations it actually sees on a seeded calibration batch: each normalised
output then has the mean and spread its (random) shift and scale give it, at every
depth. The classifier is scaled so its logits have unit spread on that batch. Each op's record
says how its parameters are seeded (OpDef.init, in mnc/ir/ops).
"""

from __future__ import annotations

import zlib

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.interpreter import Interpreter
from mnc.ir.node import Node
from mnc.ir.ops import OPS
from mnc.samples import STREAM_CALIBRATION, sample_images

# Calibration sees a fixed number of pixels (two images at 224×224) however small the images:
# at low resolution the last layers have few positions per image, and their batch-norm
# statistics need enough samples (at 96 pixels, 11 images give 99 positions per channel at 3×3).
CALIBRATION_PIXELS = 2 * 224 * 224


def calibration_batch(resolution: int) -> int:
    return min(32, max(2, round(CALIBRATION_PIXELS / resolution**2)))


class _Initialiser(Interpreter):
    """Sets each node's parameters just before it runs, from the activations that reach it."""

    def __init__(self, graph: Graph, seed: int):
        # float64, and statistics kept to 16 significant bits: the same weights on every machine
        # whatever its BLAS kernel (mnc/reproducible.py).
        super().__init__(graph, np.float64)
        self.seed = seed

    def run_node(self, name: str, node: Node, xs: list[np.ndarray]) -> np.ndarray:
        shapes = OPS[node.op].param_shapes(node.attrs, [tuple(x.shape[1:]) for x in xs])
        if shapes:
            # One stream per node, keyed by its name: a node's weights do not change when
            # layers elsewhere in the spec are added or removed.
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
            params = OPS[node.op].init(rng, shapes, xs[0])
            node.params = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
        return super().run_node(name, node, xs)


def init_weights(graph: Graph, settings, seed: int) -> Graph:
    (input_name,) = graph.inputs
    resolution = graph.node(input_name).shape[1]
    images = sample_images(settings, resolution, calibration_batch(resolution), seed, STREAM_CALIBRATION)
    _Initialiser(graph, seed).run({input_name: images})
    return graph
