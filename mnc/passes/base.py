"""What a pass is, the pass registry, and the graph properties passes require and promise.

A pass mutates a graph in place and returns whether it changed anything, or (changed, details)
where details go into its record in the report. It declares
- `after`: passes that, when the same pipeline has them, must run before it (checked before
  the pipeline runs);
- `requires`: properties the graph must have when it starts (checked against the graph);
- `ensures`: properties it guarantees (checked after it runs);
- `options`: the options it must be given (option → what provides it, for the error message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mnc.ir import activations
from mnc.ir.graph import Graph
from mnc.ir.ops import OPS
from mnc.quant import rules


@dataclass(frozen=True)
class Pass:
    name: str
    summary: str
    run: Callable[..., bool | tuple[bool, dict]]
    after: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    ensures: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)


PASSES: dict[str, Pass] = {}


def register(p: Pass) -> Pass:
    for prop in (*p.requires, *p.ensures):
        if prop not in PROPERTIES:
            raise KeyError(f"pass '{p.name}' names an unknown property '{prop}'")
    PASSES[p.name] = p
    return p


def sole_user(graph: Graph, name: str) -> str | None:
    """The one consumer of `name`, if it has exactly one and is not itself a graph output."""
    users = graph.users(name)
    return users[0] if len(users) == 1 and name not in graph.outputs else None


def absorbing_producer(graph: Graph, name: str) -> str | None:
    """The conv/fc that can take `name` (a batch norm or activation) into itself: it produces
    `name`'s input, has no other user, is not a graph output and has no fused activation yet."""
    (producer,) = graph.inputs_of(name)
    node = graph.node(producer)
    if OPS[node.op].absorbs and sole_user(graph, producer) == name and not node.attrs.get("fused_act"):
        return producer
    return None


def _unfolded_batchnorms(graph: Graph) -> list[str]:
    return [n for n in graph if graph.node(n).op == "batchnorm" and absorbing_producer(graph, n)]


def _unfused_activations(graph: Graph, activations: tuple[str, ...] = activations.FUSABLE, **_) -> list[str]:
    return [
        n
        for n in graph
        if graph.node(n).op == "act" and graph.node(n).attrs["fn"] in activations and absorbing_producer(graph, n)
    ]


# Property → the nodes that violate it. A promised property is checked with the options its pass ran with.
PROPERTIES: dict[str, Callable[..., list[str]]] = {
    "batchnorm_folded": lambda g, **_: _unfolded_batchnorms(g),
    "activations_fused": _unfused_activations,
    "no_dead_nodes": lambda g, **_: g.dead_nodes(),
    # Float rewrites would leave quantisation parameters that no longer fit the weights.
    "unquantized": lambda g, **_: [n for n in g if g.node(n).qparams is not None],
    "quantization_rules": lambda g, **_: rules.rules_broken(g),
}
