"""A numpy interpreter of the IR: the oracle for passes and a reference independent of ONNX Runtime."""
from __future__ import annotations

from typing import Callable

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.ops import OPS

# Called before each node runs with (name, node data, input arrays); may set the node's params.
BeforeHook = Callable[[str, dict, list[np.ndarray]], None]


def run(graph: Graph, feeds: dict[str, np.ndarray], *, dtype=np.float64, before: BeforeHook | None = None,
        keep: bool = False) -> dict[str, np.ndarray]:
    """Evaluate the graph on batched inputs. Returns the graph outputs (all values if keep=True).
    Computes in `dtype` (float64 by default, so the result is a reference, not another fp32 run)."""
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
        values[name] = np.asarray(OPS[data["op"]].run(data["attrs"], params, xs), dtype=dtype)
        if not keep:
            for p in producers:  # free what no later node reads
                remaining[p] -= 1
                if remaining[p] == 0 and p not in wanted:
                    del values[p]
    return values if keep else {o: values[o] for o in graph.outputs}
