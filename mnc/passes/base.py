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


def _unfolded_batchnorms(graph: Graph) -> list[str]:
    found = []
    for name in graph.nx:
        data = graph.node(name)
        if data["op"] != "batchnorm":
            continue
        (producer,) = graph.inputs_of(name)
        pdata = graph.node(producer)
        if pdata["op"] in FOLDABLE_INTO and sole_user(graph, producer) == name and not pdata["attrs"].get("fused_act"):
            found.append(name)
    return found


def _unfused_activations(graph: Graph) -> list[str]:
    from mnc.passes.fuse_act import FUSABLE

    found = []
    for name in graph.nx:
        data = graph.node(name)
        if data["op"] != "act" or data["attrs"]["fn"] not in FUSABLE:
            continue
        (producer,) = graph.inputs_of(name)
        pdata = graph.node(producer)
        if pdata["op"] in FOLDABLE_INTO and sole_user(graph, producer) == name and not pdata["attrs"].get("fused_act"):
            found.append(name)
    return found


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
