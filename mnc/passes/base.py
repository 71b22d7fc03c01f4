"""What a pass is, the pass registry, and the properties passes promise.

A pass mutates a graph in place and returns whether it changed anything. It declares
- `after`: passes that, when the same pipeline has them, must run before it (checked before
  the pipeline runs);
- `ensures`: properties of the graph it guarantees (checked after it runs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mnc.ir.graph import Graph


@dataclass(frozen=True)
class Pass:
    name: str
    summary: str
    run: Callable[..., bool]
    after: tuple[str, ...] = ()
    ensures: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)  # option → default


PASSES: dict[str, Pass] = {}


def register(p: Pass) -> Pass:
    PASSES[p.name] = p
    return p


def sole_user(graph: Graph, name: str) -> str | None:
    """The one consumer of `name`, if it has exactly one and is not itself a graph output."""
    users = graph.users(name)
    return users[0] if len(users) == 1 and name not in graph.outputs else None


FOLDABLE_INTO = ("conv", "fc")


def absorbing_producer(graph: Graph, name: str) -> str | None:
    """The conv/fc that can take `name` (a batch norm or activation) into itself: it produces
    `name`'s input, has no other user, is not a graph output and has no fused activation yet."""
    (producer,) = graph.inputs_of(name)
    data = graph.node(producer)
    if data["op"] in FOLDABLE_INTO and sole_user(graph, producer) == name and not data["attrs"].get("fused_act"):
        return producer
    return None


def _unfolded_batchnorms(graph: Graph) -> list[str]:
    return [n for n in graph.nx if graph.node(n)["op"] == "batchnorm" and absorbing_producer(graph, n)]


def _unfused_activations(graph: Graph) -> list[str]:
    from mnc.passes.fuse_act import FUSABLE

    return [n for n in graph.nx if graph.node(n)["op"] == "act" and graph.node(n)["attrs"]["fn"] in FUSABLE
            and absorbing_producer(graph, n)]


# Property → the nodes that violate it.
PROPERTIES: dict[str, Callable[[Graph], list[str]]] = {
    "batchnorm_folded": _unfolded_batchnorms,
    "activations_fused": _unfused_activations,
    "no_dead_nodes": lambda g: dead_nodes(g),
}


def dead_nodes(graph: Graph) -> list[str]:
    """Nodes no graph output depends on (graph inputs excepted)."""
    import networkx as nx

    live = set(graph.outputs)
    for out in graph.outputs:
        live |= nx.ancestors(graph.nx, out)
    return [n for n in graph.nx if n not in live and n not in graph.inputs]
