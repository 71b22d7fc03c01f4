"""Deterministic weights from a seed, with realistic activations.

Random weights alone make a degenerate network (activations explode or vanish with
depth, and softmax saturates), and checking a degenerate network proves little. So
convolutions get He-normal weights, and every batch norm takes its running statistics
from the activations it actually sees on a seeded calibration batch: each normalised
output then has the mean and spread its (random) shift and scale give it, at every
depth. The classifier is scaled so its logits have unit spread on that batch.
"""

from __future__ import annotations

import zlib

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.interpreter import Interpreter
from mnc.ir.node import Node
from mnc.ir.ops import OPS
from mnc.reproducible import stable
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
            params = _INITIALISERS[node.op](rng, shapes, xs[0])
            node.params = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
        return super().run_node(name, node, xs)


def init_weights(graph: Graph, settings, seed: int) -> Graph:
    (input_name,) = graph.inputs
    resolution = graph.node(input_name).shape[1]
    images = sample_images(settings, resolution, calibration_batch(resolution), seed, STREAM_CALIBRATION)
    _Initialiser(graph, seed).run({input_name: images})
    return graph


def _conv(rng, shapes, x):
    weight = shapes["weight"]
    fan_in = int(np.prod(weight[1:]))
    params = {"weight": rng.standard_normal(weight) * np.sqrt(2.0 / fan_in)}
    if "bias" in shapes:
        params["bias"] = rng.normal(0.0, 0.1, shapes["bias"])
    return params


def _fc(rng, shapes, x):
    weight = rng.standard_normal(shapes["weight"])
    logits = x.reshape(x.shape[0], -1).astype(np.float64) @ weight.T
    params = {"weight": weight / max(float(stable(logits.std())), 1e-12)}
    if "bias" in shapes:
        params["bias"] = rng.normal(0.0, 0.1, shapes["bias"])
    return params


def _batchnorm(rng, shapes, x):
    axes = (0,) + tuple(range(2, x.ndim))
    (channels,) = shapes["gamma"]
    return {
        "gamma": rng.uniform(0.5, 1.5, channels),
        "beta": rng.normal(0.0, 0.25, channels),
        "mean": stable(x.mean(axis=axes, dtype=np.float64)),
        "var": stable(x.var(axis=axes, dtype=np.float64)),
    }


_INITIALISERS = {"conv": _conv, "fc": _fc, "batchnorm": _batchnorm}
