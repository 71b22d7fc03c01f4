"""A numpy interpreter of the IR: the oracle for passes and a reference independent of ONNX Runtime.

As torch.fx's Interpreter: `run` walks the graph in topological order and calls `run_node` for
each node; a subclass changes what a node computes (mnc/quant's fake-quant interpreter) or watches
it (calibration, weight initialisation) by overriding that one method."""

from __future__ import annotations

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.node import Node
from mnc.ir.ops import OPS


class Interpreter:
    def __init__(self, graph: Graph, dtype=np.float64):
        """Computes in `dtype` (float64 by default, so the result is a reference, not another fp32 run)."""
        self.graph, self.dtype = graph, dtype

    def run(self, feeds: dict[str, np.ndarray], *, keep: bool = False) -> dict[str, np.ndarray]:
        """Evaluate the graph on batched inputs. Returns the graph outputs (every value if keep)."""
        graph = self.graph
        values: dict[str, np.ndarray] = {}
        remaining = {n: len(graph.users(n)) for n in graph}
        wanted = set(graph.outputs)
        for name in graph.topo():
            node = graph.node(name)
            producers = graph.inputs_of(name)
            if node.op == "input":
                xs = [np.asarray(feeds[name], dtype=self.dtype)]
            else:
                xs = [values[p] for p in producers]
            values[name] = self.run_node(name, node, xs)
            if not keep:
                for p in producers:  # free what no later node reads
                    remaining[p] -= 1
                    if remaining[p] == 0 and p not in wanted:
                        del values[p]
        return values if keep else {o: values[o] for o in graph.outputs}

    def run_node(self, name: str, node: Node, xs: list[np.ndarray]) -> np.ndarray:
        return np.asarray(OPS[node.op].run(node.attrs, self.params(node), xs), dtype=self.dtype)

    def params(self, node: Node) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=self.dtype) for k, v in node.params.items()}


def run(graph: Graph, feeds: dict[str, np.ndarray], *, dtype=np.float64, keep: bool = False) -> dict[str, np.ndarray]:
    return Interpreter(graph, dtype).run(feeds, keep=keep)
