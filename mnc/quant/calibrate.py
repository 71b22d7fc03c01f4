"""Activation ranges from calibration data: run the (optimised, fp32) graph and observe every
node's output. Deterministic: the same data and seed give the same ranges."""
from __future__ import annotations

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.interpreter import run

METHODS = {
    "minmax": "the smallest and largest value seen",
    "percentile": "the 0.01th and 99.99th percentiles of the values seen (clips outliers)",
}
PERCENTILE = 99.99
BATCH = 16


def activation_ranges(graph: Graph, data: np.ndarray, method: str, progress=None) -> dict[str, list[float]]:
    """progress(done, total), if given, is called after each batch."""
    observed: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(data), BATCH):
        if progress is not None:
            progress(start, len(data))
        values = run(graph, {graph.inputs[0]: data[start:start + BATCH]}, dtype=np.float32, keep=True)
        for name, value in values.items():
            if method == "minmax":
                observed.setdefault(name, []).append(np.array([value.min(), value.max()]))
            else:  # keep a bounded sample per batch for the percentiles
                flat = value.ravel()
                if flat.size > 200_000:
                    flat = flat[np.random.default_rng([start, len(name)]).choice(flat.size, 200_000, replace=False)]
                observed.setdefault(name, []).append(flat)
    if progress is not None:
        progress(len(data), len(data))
    ranges = {}
    for name, parts in observed.items():
        if method == "minmax":
            stacked = np.stack(parts)
            ranges[name] = [float(stacked[:, 0].min()), float(stacked[:, 1].max())]
        else:
            values = np.concatenate(parts)
            ranges[name] = [float(np.percentile(values, 100 - PERCENTILE)), float(np.percentile(values, PERCENTILE))]
    return ranges
