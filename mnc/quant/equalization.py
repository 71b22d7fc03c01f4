"""Activation equalisation before int8 calibration (the activation side of cross-layer equalisation,
Nagel et al. 2019, §4.1): a tensor quantised per tensor on one uint8 grid wastes most of its 256
levels on channels whose values are far smaller than its largest channel's. On ImageNet-trained
MobileNetV2 that rounding of the expansion's output, not of any weight, is what a 1×1 projection
loses most to.

Where a convolution's only reader is a depthwise convolution, output channel i of the first is
multiplied by 2^k_i (its weights and bias) and depthwise filter i by 2^-k_i, with k_i the whole
number of doublings that brings channel i's largest value on the calibration data closest to, not
beyond, the largest channel's. Both layers quantise their weights per channel, so their int8 weights
are unchanged (the scales move by 2^k); only the grid between them gets finer for small channels.

Exact, by construction: powers of two scale float products and sums without rounding, so the
depthwise output is the original one. A fused ReLU is exact for any scale; a fused ReLU6 clips at
6 where the exact transform clips channel i at 6·2^k_i, but the tensor's uint8 grid is calibrated
within [0, 6] and saturates first, so the int8 network computes the exactly equalised one. That
holds only with int8 activations: weight-only int8 is not equalised. The float graph in between
computes the original on the calibration data (every channel stays within 6 there); it is never
an artifact or a reference."""

from __future__ import annotations

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.interpreter import Interpreter
from mnc.ir.node import Node
from mnc.reproducible import stable

SAMPLES = 32  # of the calibration data: the largest values per channel, which set whole doublings
MAX_DOUBLINGS = 16
SCALABLE = (None, "relu", "relu6")  # fused activations that commute with a positive channel scale


def pairs(graph: Graph) -> list[tuple[str, str]]:
    """(convolution, the depthwise convolution that is its only reader) pairs that can be equalised."""
    found = []
    for name in graph.topo():
        node = graph.node(name)
        users = graph.users(name)
        if node.op != "conv" or node.attrs.get("fused_act") not in SCALABLE or not node.attrs["bias"]:
            continue
        if name in graph.outputs or len(users) != 1 or not graph.is_depthwise(users[0]):
            continue
        found.append((name, users[0]))
    return found


class _ChannelMaxima(Interpreter):
    def __init__(self, graph: Graph, watched: set[str]):
        super().__init__(graph, np.float64)
        self.watched, self.maxima = watched, {}

    def run_node(self, name: str, node: Node, xs: list[np.ndarray]) -> np.ndarray:
        value = super().run_node(name, node, xs)
        if name in self.watched:
            seen = value.max(axis=(0, 2, 3))
            self.maxima[name] = seen if name not in self.maxima else np.maximum(self.maxima[name], seen)
        return value


def doublings(graph: Graph, data: np.ndarray, batch: int = 16) -> dict[str, list[int]]:
    """k_i per output channel of each equalisable convolution, from the calibration data."""
    found = pairs(graph)
    if not found:
        return {}
    observer = _ChannelMaxima(graph, {first for first, _ in found})
    for start in range(0, len(data), batch):
        observer.run({graph.inputs[0]: data[start : start + batch]})
    result = {}
    for first, _ in found:
        # Kept to 16 significant bits, so whole doublings do not depend on the machine's BLAS kernel.
        a = stable(observer.maxima[first])
        top = a.max()
        k = np.zeros(a.shape, dtype=np.int64)
        live = a > 0
        k[live] = np.floor(np.log2(top / a[live]))
        result[first] = np.clip(k, 0, MAX_DOUBLINGS).tolist()
    return {name: k for name, k in result.items() if any(k)}


def equalized(graph: Graph, scales: dict[str, list[int]]) -> Graph:
    """A copy of the graph with these doublings applied."""
    out = graph.copy()
    for first, second in pairs(graph):
        if first not in scales:
            continue
        factor = np.ldexp(1.0, np.asarray(scales[first], dtype=np.int64))
        a, b = out.node(first), out.node(second)
        a.params = {
            **a.params,
            "weight": (a.params["weight"] * factor.reshape(-1, 1, 1, 1)).astype(a.params["weight"].dtype),
            "bias": (a.params["bias"] * factor).astype(a.params["bias"].dtype),
        }
        depthwise = b.params["weight"]
        b.params = {**b.params, "weight": (depthwise / factor.reshape(-1, 1, 1, 1)).astype(depthwise.dtype)}
    return out
