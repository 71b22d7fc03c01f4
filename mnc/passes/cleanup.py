"""Clean-up: remove dead nodes, identity activations and flattens of tensors already flat."""
from __future__ import annotations

from mnc.ir.graph import Graph
from mnc.passes.base import Pass, dead_nodes, register
from mnc.passes.rewrite import bypass


def cleanup(graph: Graph) -> bool:
    changed = False
    for name in graph.topo():
        data = graph.node(name)
        identity = data["op"] == "act" and data["attrs"]["fn"] == "identity"
        redundant_flatten = data["op"] == "flatten" and len(graph.node(graph.inputs_of(name)[0])["shape"]) == 1
        if identity or redundant_flatten:
            bypass(graph, name)
            changed = True
    dead = dead_nodes(graph)
    graph.nx.remove_nodes_from(dead)
    return changed or bool(dead)


register(Pass("cleanup", "remove dead nodes, identity ops and redundant reshapes", cleanup,
              ensures=("no_dead_nodes",)))
