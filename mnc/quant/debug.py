"""Where int8 loses accuracy: each quantised layer's error against fp32, measured on data.

For every node of a quantised graph, three runs side by side in float64:
- fp32: the optimised graph as it is (the node's params, no qparams);
- isolated: the node's int8 arithmetic (dequantised weights, int32 bias, output grid) fed the
  fp32 values of its inputs, rounded to their grids: what this layer alone adds;
- propagated: the int8 network's own values (the fake-quant reference the artifacts match).
As TensorFlow's quantisation debugger: the SQNR of each against fp32, the calibrated range and the
share of fp32 values that the range clips."""

from __future__ import annotations

import dataclasses

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.ops import OPS
from mnc.quant.scheme import ACTIVATION_LEVELS, fake_quantize

BATCH = 8


@dataclasses.dataclass(frozen=True)
class LayerError:
    name: str
    op: str
    isolated_sqnr: float  # dB: this layer's int8 arithmetic on fp32 inputs
    propagated_sqnr: float  # dB: the int8 network's value here
    low: float  # the output grid's range
    high: float
    clipped: float  # share of fp32 values outside [low, high]

    def as_dict(self) -> dict:
        """JSON values: an error-free layer's SQNR (infinite) is null."""
        return {k: _json_number(v) for k, v in dataclasses.asdict(self).items()}


def _json_number(v):
    if not isinstance(v, float):
        return v
    return None if np.isinf(v) else round(v, 4)


def worst(errors: list[dict], count: int = 3) -> list[dict]:
    """The layers whose own int8 arithmetic loses most (lowest SQNR alone), worst first."""
    finite = [e for e in errors if e["isolated_sqnr"] is not None]
    return sorted(finite, key=lambda e: e["isolated_sqnr"])[:count]


class _Sums:
    """Running sums of one node's signal and noises over batches."""

    def __init__(self):
        self.signal = self.isolated = self.propagated = 0.0
        self.clipped = self.count = 0


def _db(signal: float, noise: float) -> float:
    return float("inf") if noise == 0 else 10 * float(np.log10(max(signal, 1e-300) / noise))


def layer_errors(quantized: Graph, data: np.ndarray) -> list[LayerError]:
    """Per quantised node in topological order, measured on `data` (NCHW float inputs)."""
    sums: dict[str, _Sums] = {}
    for start in range(0, len(data), BATCH):
        _run_batch(quantized, data[start : start + BATCH].astype(np.float64), sums)
    errors = []
    for name in quantized.topo():
        node = quantized.node(name)
        if node.qparams is None or node.op == "input":
            continue
        s = sums[name]
        low, high = _ends(node.qparams.output)
        errors.append(
            LayerError(
                name,
                node.op,
                _db(s.signal, s.isolated),
                _db(s.signal, s.propagated),
                float(low),
                float(high),
                s.clipped / max(s.count, 1),
            )
        )
    return errors


def _run_batch(graph: Graph, x: np.ndarray, sums: dict[str, _Sums]) -> None:
    fp32: dict[str, np.ndarray] = {}
    own: dict[str, np.ndarray] = {}
    remaining = {n: len(graph.users(n)) for n in graph}
    for name in graph.topo():
        node = graph.node(name)
        producers = graph.inputs_of(name)
        params = {k: np.asarray(v, dtype=np.float64) for k, v in node.params.items()}
        op = OPS[node.op]
        if node.op == "input":
            fp32[name] = x
            own[name] = x if node.qparams is None else fake_quantize(x, node.qparams.output)
        else:
            fp32[name] = np.asarray(op.run(node.attrs, params, [fp32[p] for p in producers]), np.float64)
            q = node.qparams
            if q is None:
                own[name] = np.asarray(op.run(node.attrs, params, [own[p] for p in producers]), np.float64)
            else:
                qparams = dict(params)
                qparams.update({k: v.astype(np.float64) for k, v in q.dequantized_params().items()})
                on_grid = [_on_grid(graph, p, fp32[p]) for p in producers]
                isolated = fake_quantize(np.asarray(op.run(node.attrs, qparams, on_grid), np.float64), q.output)
                own[name] = fake_quantize(
                    np.asarray(op.run(node.attrs, qparams, [own[p] for p in producers]), np.float64), q.output
                )
                s = sums.setdefault(name, _Sums())
                reference = fp32[name]
                s.signal += float((reference**2).sum())
                s.isolated += float(((reference - isolated) ** 2).sum())
                s.propagated += float(((reference - own[name]) ** 2).sum())
                low, high = _ends(q.output)
                # Half a step beyond the ends still rounds onto the grid: only what lies further is clipped.
                half = q.output.scale / 2
                s.clipped += int(((reference < low - half) | (reference > high + half)).sum())
                s.count += reference.size
        for p in producers:
            remaining[p] -= 1
            if remaining[p] == 0:
                del fp32[p], own[p]


def _ends(p) -> tuple[float, float]:
    return -p.zero_point * p.scale, (ACTIVATION_LEVELS - p.zero_point) * p.scale


def _on_grid(graph: Graph, name: str, value: np.ndarray) -> np.ndarray:
    q = graph.node(name).qparams
    return value if q is None else fake_quantize(value, q.output)
