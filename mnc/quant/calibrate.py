"""Activation ranges from calibration data: run the (optimised, fp32) graph and observe every
node's output. Deterministic: the same data and seed give the same ranges."""

from __future__ import annotations

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.interpreter import Interpreter
from mnc.ir.node import Node
from mnc.quant.scheme import activation_params, fake_quantize
from mnc.reproducible import stable

METHODS = {
    "minmax": "the smallest and largest value seen",
    "percentile": "the 0.01th and 99.99th percentiles of the values seen (clips outliers)",
    "mse": "the range, [min, max] shrunk by a common factor, whose uint8 grid has the least mean squared "
    "error over the values seen",
    "entropy": "the clipping threshold whose 8-bit histogram is closest to the values' own in "
    "Kullback-Leibler divergence (TensorRT's entropy calibration)",
}
# The default, chosen by measurement (benchmarks/int8_accuracy.py): on ImageNet-trained MobileNetV2
# and held-out photographs, percentile ranges gave the int8 logits closest to fp32 (mean cosine 0.986
# with 8-bit weights, against 0.982 mse, 0.981 entropy, 0.969 minmax) at 224² and 160².
DEFAULT_METHOD = "percentile"
PERCENTILE = 99.99
BATCH = 16
SAMPLE_PER_BATCH = 200_000  # values kept per tensor and batch for the methods that look at them all
BINS = 2048  # the histogram the mse and entropy searches work on
SMOOTHING = 1e-4  # a count that stands in for an empty level where the data had values (as TensorRT, MXNet)


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
                values = stable(np.concatenate(parts))
                low, high = RANGE_OF[self.method](values)
                ranges[name] = [float(stable(low)), float(stable(high))]
        return ranges


def _percentile_range(values: np.ndarray) -> tuple[float, float]:
    return np.percentile(values, 100 - PERCENTILE), np.percentile(values, PERCENTILE)


def _mse_range(values: np.ndarray) -> tuple[float, float]:
    """Searched on a histogram of the values: each bin's error is its centre's, times its count
    (the error within a bin is the same for every candidate, so it does not change the choice)."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    if high - low <= 0:
        return low, high
    counts, edges = np.histogram(values[values != 0], bins=BINS, range=(low, high))  # zeros are always exact
    centres = (edges[:-1] + edges[1:]) / 2
    best, best_error = 1.0, np.inf
    for shrink in np.geomspace(1.0, 0.05, 120):
        p = activation_params(low * shrink, high * shrink)
        error = float((counts * (centres - fake_quantize(centres, p)) ** 2).sum())
        if error < best_error:
            best, best_error = shrink, error
    return low * best, high * best


def _entropy_range(values: np.ndarray) -> tuple[float, float]:
    """TensorRT's search on |x| (or x, for a tensor that is never negative): the threshold T whose
    distribution, clipped at T and merged into the levels 8 bits give that side, loses the least
    information (KL divergence) against the values' own, clipped at T."""
    low, high = float(values.min()), float(values.max())
    signed = low < 0
    magnitudes = np.abs(values) if signed else values
    # Exact zeros (half of a ReLU's output) are exact at every threshold: the zero point holds them.
    # Left in, their spike would be spread over the first level's bins and dominate the divergence.
    magnitudes = magnitudes[magnitudes != 0]
    top = float(magnitudes.max()) if magnitudes.size else 0.0
    if top <= 0:
        return low, high
    levels = 128 if signed else 256
    counts, edges = np.histogram(magnitudes, bins=BINS, range=(0.0, top))
    counts = counts.astype(np.float64)
    if np.unique(magnitudes).size <= levels:  # so few distinct values that 8 bits hold them all unclipped
        return low, high
    best, best_divergence = BINS, np.inf
    for i in range(levels, BINS + 1, 4):
        p = counts[:i].copy()
        p[-1] += counts[i:].sum()  # what the threshold clips lands on it
        # The 8-bit version is made from the values within the threshold only: the clipped ones are
        # what it loses. Each level spreads its count evenly over the bins it covers that held values.
        q = np.zeros(i)
        for group in np.array_split(np.arange(i), levels):
            used = group[p[group] > 0]
            if used.size:
                q[used] = counts[group].sum() / used.size
        if q.sum() == 0:  # every value clipped: nothing is left to compare
            continue
        mask = p > 0
        pn = p[mask] / p.sum()
        qn = np.maximum(q[mask], SMOOTHING) / max(q.sum(), SMOOTHING)
        divergence = float(np.sum(pn * np.log(pn / qn)))
        if divergence < best_divergence:
            best, best_divergence = i, divergence
    threshold = float(edges[best])
    return (max(low, -threshold), min(high, threshold)) if signed else (low, min(high, threshold))


RANGE_OF = {"percentile": _percentile_range, "mse": _mse_range, "entropy": _entropy_range}


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
