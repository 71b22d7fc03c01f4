"""A numpy interpreter of the IR: the oracle for passes and a reference independent of ONNX Runtime."""
from __future__ import annotations

from typing import Callable

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.ops import OPS
from mnc.quant.scheme import dequantized, fake_quantize

# Called before each node runs with (name, node data, input arrays); may set the node's params.
BeforeHook = Callable[[str, dict, list[np.ndarray]], None]


def run(graph: Graph, feeds: dict[str, np.ndarray], *, dtype=np.float64, before: BeforeHook | None = None,
        keep: bool = False, fake_quant: bool = False, quantize_activations: bool = True) -> dict[str, np.ndarray]:
    """Evaluate the graph on batched inputs. Returns the graph outputs (all values if keep=True).
    Computes in `dtype` (float64 by default, so the result is a reference, not another fp32 run).
    fake_quant: for a quantised graph, use the dequantised int8 weights and int32 biases and round
    every tensor to its uint8 grid — the reference for quantised artifacts (quantize_activations=False:
    int8 weights with float activations, as Core ML's weight-only int8 computes)."""
    values: dict[str, np.ndarray] = {}
    remaining = {n: graph.nx.out_degree(n) for n in graph.nx}
    wanted = set(graph.outputs)
    for name in graph.topo():
        data = graph.node(name)
        producers = graph.inputs_of(name)
        if data["op"] == "input":
            xs = [np.asarray(feeds[name], dtype=dtype)]
        else:
            xs = [values[p] for p in producers]
        if before is not None:
            before(name, data, xs)
        params = {k: np.asarray(v, dtype=dtype) for k, v in data["params"].items()}
        q = data.get("qparams") if fake_quant else None
        if q is not None:
            params.update({k: v.astype(dtype) for k, v in dequantized(q).items()})
        value = np.asarray(OPS[data["op"]].run(data["attrs"], params, xs), dtype=dtype)
        quantize_output = q is not None and quantize_activations
        values[name] = fake_quantize(value, q["output"]).astype(dtype) if quantize_output else value
        if not keep:
            for p in producers:  # free what no later node reads
                remaining[p] -= 1
                if remaining[p] == 0 and p not in wanted:
                    del values[p]
    return values if keep else {o: values[o] for o in graph.outputs}

