"""Shape inference: fills every node's `shape` from its inputs through the op registry."""

from __future__ import annotations

from mnc.errors import InputError
from mnc.ir.graph import Graph, GraphError
from mnc.ir.ops import OPS, ShapeError


def infer_shapes(graph: Graph) -> Graph:
    """Set node.shape everywhere."""
    for name in graph.topo():
        infer_node(graph, name)
    return graph


def infer_node(graph: Graph, name: str) -> None:
    """Set one node's shape from its inputs'. A shape rule that fails is reported at the spec
    line that produced the node: at this point it is a property of the spec and its α/resolution."""
    node = graph.node(name)
    try:
        node.shape = tuple(OPS[node.op].infer(node.attrs, graph.input_shapes(name)))
    except ShapeError as exc:
        raise InputError(f"{exc} (in layer '{name}')", node.src) from None


def check_shapes(graph: Graph) -> None:
    """Raise GraphError where a node's recorded shape no longer follows from its inputs' (after a rewrite)."""
    for name in graph.topo():
        node = graph.node(name)
        shape = tuple(OPS[node.op].infer(node.attrs, graph.input_shapes(name)))
        if shape != node.shape:
            raise GraphError(f"shape {node.shape} no longer follows from the inputs ({shape})", name, node.src)
