"""Graph surgery shared by the passes."""
from __future__ import annotations

import networkx as nx

from mnc.ir.graph import Graph


def replace_uses(graph: Graph, old: str, new: str) -> None:
    """Every consumer of `old` reads `new` instead, at the same input port."""
    for user in list(graph.users(old)):
        port = graph.nx.edges[old, user]["port"]
        graph.nx.remove_edge(old, user)
        graph.nx.add_edge(new, user, port=port)


def absorb(graph: Graph, keep: str, drop: str) -> str:
    """Remove `drop`, whose computation `keep` has taken over: its users read `keep`.
    If `drop` was a graph output, `keep` takes its name so output names survive.
    Returns the surviving node's name."""
    replace_uses(graph, drop, keep)
    graph.nx.remove_node(drop)
    if drop in graph.outputs:
        nx.relabel_nodes(graph.nx, {keep: drop}, copy=False)
        graph.outputs = [drop if o == keep else o for o in graph.outputs]
        return drop
    return keep


def bypass(graph: Graph, name: str) -> None:
    """Remove a node that computes the identity of its single input."""
    (producer,) = graph.inputs_of(name)
    if name in graph.outputs:
        absorb(graph, producer, name)
        return
    replace_uses(graph, name, producer)
    graph.nx.remove_node(name)
