"""Shape inference: fills every node's `shape` from its inputs through the op registry."""
from __future__ import annotations

from mnc.errors import InputError
from mnc.ir.graph import Graph
from mnc.ir.ops import OPS, ShapeError


def infer_shapes(graph: Graph) -> Graph:
    """Set node["shape"] everywhere."""
    for name in graph.topo():
        infer_node(graph, name)
    return graph


def infer_node(graph: Graph, name: str) -> None:
    """Set one node's shape from its inputs'. A shape rule that fails is reported at the spec
    line that produced the node: at this point it is a property of the spec and its α/resolution."""
    data = graph.node(name)
    in_shapes = [graph.node(p)["shape"] for p in graph.inputs_of(name)]
    try:
        data["shape"] = tuple(OPS[data["op"]].infer(data["attrs"], in_shapes))
    except ShapeError as exc:
        raise InputError(f"{exc} (in layer '{name}')", data["src"]) from None
