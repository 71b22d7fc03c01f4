"""The fake-quant interpreter: what a quantised artifact must compute, in float64.

Each quantised node computes with its dequantised int8 weights and int32 bias, and its output is
rounded to its uint8 grid. With activations=False only the weights are quantised: what Core ML's
weight-only int8 computes."""

from __future__ import annotations

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.interpreter import Interpreter
from mnc.ir.node import Node
from mnc.ir.ops import OPS
from mnc.quant.scheme import fake_quantize


class FakeQuantInterpreter(Interpreter):
    def __init__(self, graph: Graph, *, activations: bool = True):
        super().__init__(graph, np.float64)
        self.activations = activations

    def run_node(self, name: str, node: Node, xs: list[np.ndarray]) -> np.ndarray:
        q = node.qparams
        if q is None:
            return super().run_node(name, node, xs)
        params = self.params(node)
        params.update({k: v.astype(self.dtype) for k, v in q.dequantized_params().items()})
        value = np.asarray(OPS[node.op].run(node.attrs, params, xs), dtype=self.dtype)
        return fake_quantize(value, q.output).astype(self.dtype) if self.activations else value
