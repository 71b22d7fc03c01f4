"""Activation ranges from calibration data: run the (optimised, fp32) graph and observe every
node's output. Deterministic: the same data and seed give the same ranges."""

from __future__ import annotations

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.interpreter import Interpreter
from mnc.ir.node import Node
from mnc.reproducible import stable

METHODS = {
    "minmax": "the smallest and largest value seen",
    "percentile": "the 0.01th and 99.99th percentiles of the values seen (clips outliers)",
}
PERCENTILE = 99.99
BATCH = 16
SAMPLE_PER_BATCH = 200_000  # values kept per tensor and batch for the percentiles


class RangeObserver(Interpreter):
    """Runs the graph in float64 and keeps, per node, what its range needs; ranges are kept to 16
    significant bits, so they do not depend on the machine's BLAS kernel (mnc/reproducible.py)."""

    def __init__(self, graph: Graph, method: str):
        super().__init__(graph, np.float64)
        self.method = method
        self.observed: dict[str, list[np.ndarray]] = {}
        self.batch_start = 0

    def run_node(self, name: str, node: Node, xs: list[np.ndarray]) -> np.ndarray:
        value = super().run_node(name, node, xs)
        if self.method == "minmax":
            seen = np.array([value.min(), value.max()])
        else:
            seen = value.ravel()
            if seen.size > SAMPLE_PER_BATCH:
                rng = np.random.default_rng([self.batch_start, len(name)])
                seen = seen[rng.choice(seen.size, SAMPLE_PER_BATCH, replace=False)]
        self.observed.setdefault(name, []).append(seen)
        return value

    def ranges(self) -> dict[str, list[float]]:
        ranges = {}
        for name, parts in self.observed.items():
            if self.method == "minmax":
                stacked = np.stack(parts)
                ranges[name] = [float(stable(stacked[:, 0].min())), float(stable(stacked[:, 1].max()))]
            else:
                values = np.concatenate(parts)
                ranges[name] = [
                    float(stable(np.percentile(values, 100 - PERCENTILE))),
                    float(stable(np.percentile(values, PERCENTILE))),
                ]
        return ranges


def activation_ranges(graph: Graph, data: np.ndarray, method: str, progress=None) -> dict[str, list[float]]:
    """progress(done, total), if given, is called after each batch."""
    observer = RangeObserver(graph, method)
    for start in range(0, len(data), BATCH):
        if progress is not None:
            progress(start, len(data))
        observer.batch_start = start
        observer.run({graph.inputs[0]: data[start : start + BATCH]})
    if progress is not None:
        progress(len(data), len(data))
    return observer.ranges()
