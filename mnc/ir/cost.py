"""MACs and parameter counts per node, under the conventions of DESIGN.md."""

from __future__ import annotations

from dataclasses import dataclass

from mnc.ir.graph import Graph
from mnc.ir.ops import OPS, param_count


@dataclass(frozen=True)
class NodeCost:
    macs: int
    params: int


def node_cost(graph: Graph, name: str) -> NodeCost:
    data = graph.node(name)
    op = OPS[data.op]
    in_shapes = [graph.node(p).shape for p in graph.inputs_of(name)]
    return NodeCost(op.macs(data.attrs, in_shapes, data.shape), param_count(op, data.attrs, in_shapes))


def graph_cost(graph: Graph) -> NodeCost:
    costs = [node_cost(graph, n) for n in graph]
    return NodeCost(sum(c.macs for c in costs), sum(c.params for c in costs))
