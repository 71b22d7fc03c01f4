"""Clean-up: remove dead nodes, identity activations and flattens of tensors already flat."""

from __future__ import annotations

from mnc.ir.activations import IDENTITY
from mnc.ir.graph import Graph
from mnc.passes.base import Pass, register


def cleanup(graph: Graph) -> bool:
    changed = False
    for name in graph.topo():
        node = graph.node(name)
        identity = node.op == "act" and node.attrs["fn"] == IDENTITY
        redundant_flatten = node.op == "flatten" and len(graph.input_shapes(name)[0]) == 1
        if identity or redundant_flatten:
            graph.bypass(name)
            changed = True
    dead = graph.dead_nodes()
    graph.remove(dead)
    return changed or bool(dead)


register(Pass("cleanup", "remove dead nodes, identity ops and redundant reshapes", cleanup, ensures=("no_dead_nodes",)))
