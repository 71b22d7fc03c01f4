"""The IR graph: a thin class over networkx.DiGraph, the only code that touches networkx.

Nodes are keyed by stable, readable names derived from the spec (`stage3.block1.dw`) and hold a
`Node` record (mnc/ir/node.py). Edges carry `port`, the position of the producer among the
consumer's inputs (networkx keeps no order). Passes rewrite the graph through the methods below.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Iterator

import networkx as nx

from mnc.errors import Loc
from mnc.ir.node import Node, QParamsError, check_qparams
from mnc.ir.ops import OPS, Shape, is_depthwise


class GraphError(Exception):
    """A malformed graph: always a bug in whatever produced it, never bad user input."""

    def __init__(self, message: str, node: str | None = None, src: Loc | None = None):
        where = f" (node '{node}'" + (f", from {src}" if src else "") + ")" if node else ""
        super().__init__(message + where)
        self.node, self.src = node, src


class Graph:
    def __init__(self, name: str = "network"):
        self.name = name
        self._g = nx.DiGraph()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        # Output node → the name the artifact gives it, where the spec names its outputs.
        self.output_labels: dict[str, str] = {}

    # ---- building ------------------------------------------------------------

    def add(self, name: str, op: str, inputs=(), *, attrs=None, params=None, src: Loc | None = None) -> str:
        if name in self._g:
            raise GraphError("duplicate node name", name, src)
        self._g.add_node(name, node=Node(op, dict(attrs or {}), dict(params or {}), src))
        for port, producer in enumerate(inputs):
            if producer not in self._g:
                raise GraphError(f"input '{producer}' does not exist", name, src)
            if self._g.has_edge(producer, name):
                raise GraphError(f"'{producer}' feeds this node twice; the IR has one edge per pair", name, src)
            self._g.add_edge(producer, name, port=port)
        if op == "input":
            self.inputs.append(name)
        return name

    # ---- queries ---------------------------------------------------------------

    def node(self, name: str) -> Node:
        return self._g.nodes[name]["node"]

    def __contains__(self, name: str) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def __iter__(self) -> Iterator[str]:
        """Node names, in insertion order (use topo() for an evaluation order)."""
        return iter(list(self._g))

    def inputs_of(self, name: str) -> list[str]:
        pred = self._g.pred[name]  # producer → edge data; on the hot path of every graph walk
        if len(pred) < 2:
            return list(pred)
        return sorted(pred, key=lambda producer: pred[producer]["port"])

    def users(self, name: str) -> list[str]:
        return list(self._g.successors(name))

    def topo(self) -> list[str]:
        return list(nx.topological_sort(self._g))

    def ops(self) -> list[str]:
        """The op of every node in topological order: the usual thing to assert in pass tests."""
        return [self.node(n).op for n in self.topo()]

    def op_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.node(n).op for n in self._g).items()))

    def input_shapes(self, name: str) -> list[Shape]:
        return [self.node(p).shape for p in self.inputs_of(name)]

    def is_depthwise(self, name: str) -> bool:
        """A convolution with one filter per input channel (groups = input = output channels)."""
        node = self.node(name)
        return node.op == "conv" and is_depthwise(node.attrs, self.input_shapes(name)[0][0])

    def param_shapes(self, name: str) -> dict[str, Shape]:
        """The parameters a node's op needs, with their shapes, given its inputs' shapes."""
        node = self.node(name)
        return OPS[node.op].param_shapes(node.attrs, self.input_shapes(name))

    def dead_nodes(self) -> list[str]:
        """Nodes no graph output depends on (graph inputs excepted)."""
        live = set(self.outputs)
        for out in self.outputs:
            live |= nx.ancestors(self._g, out)
        return [n for n in self._g if n not in live and n not in self.inputs]

    def copy(self) -> "Graph":
        """A copy whose structure, attrs and params dicts can be changed without touching this one.
        Parameter arrays are shared: passes replace arrays, they never write into them."""
        other = Graph(self.name)
        other._g = self._g.copy()
        for name in other._g:
            node = self.node(name)
            other._g.nodes[name]["node"] = Node(
                node.op, copy.deepcopy(node.attrs), dict(node.params), node.src, node.shape, node.qparams
            )
        other.inputs, other.outputs = list(self.inputs), list(self.outputs)
        other.output_labels = dict(self.output_labels)
        return other

    # ---- rewriting ---------------------------------------------------------------

    def connect(self, producer: str, consumer: str, port: int) -> None:
        self._g.add_edge(producer, consumer, port=port)

    def disconnect(self, producer: str, consumer: str) -> None:
        self._g.remove_edge(producer, consumer)

    def remove(self, names) -> None:
        self._g.remove_nodes_from(list(names))

    def replace_uses(self, old: str, new: str, users: list[str] | None = None) -> None:
        """Every consumer of `old` (or those of `users`) reads `new` instead, at the same input port."""
        for user in self.users(old) if users is None else users:
            port = self._g.edges[old, user]["port"]
            self._g.remove_edge(old, user)
            self._g.add_edge(new, user, port=port)

    def absorb(self, keep: str, drop: str) -> str:
        """Remove `drop`, whose computation `keep` has taken over: its users read `keep`.
        If `drop` was a graph output, `keep` takes its name so output names survive.
        Returns the surviving node's name."""
        self.replace_uses(drop, keep)
        self._g.remove_node(drop)
        if drop in self.outputs:
            nx.relabel_nodes(self._g, {keep: drop}, copy=False)
            self.outputs = [drop if o == keep else o for o in self.outputs]
            return drop
        return keep

    def bypass(self, name: str) -> None:
        """Remove a node that computes the identity of its single input."""
        (producer,) = self.inputs_of(name)
        if name in self.outputs:
            self.absorb(producer, name)
            return
        self.replace_uses(name, producer)
        self._g.remove_node(name)

    # ---- checking ---------------------------------------------------------------

    def validate(self, *, require_params: bool = False) -> None:
        """Raise GraphError on a malformed graph: unknown ops, attributes not of the op's schema, wrong
        arity or ports, cycles, missing outputs or source positions, and (after shape inference)
        parameter shapes and quantisation parameters."""
        if not nx.is_directed_acyclic_graph(self._g):
            cycle = nx.find_cycle(self._g)
            raise GraphError("graph has a cycle: " + " → ".join(u for u, _ in cycle), cycle[0][0])
        if not self.outputs:
            raise GraphError("graph has no outputs")
        for out in self.outputs:
            if out not in self._g:
                raise GraphError(f"graph output '{out}' is not a node")
        for name in self._g:
            node = self.node(name)
            op = OPS.get(node.op)
            if op is None:
                raise GraphError(f"unknown op {node.op!r}", name, node.src)
            if node.src is None:
                raise GraphError("node has no source position", name)
            wrong = op.attr_errors(node.attrs)
            if wrong:
                raise GraphError(f"op '{op.name}': " + "; ".join(wrong), name, node.src)
            ports = sorted(p for _, _, p in self._g.in_edges(name, data="port"))
            if ports != list(range(len(ports))):
                raise GraphError(f"input ports {ports} are not 0..{len(ports) - 1}", name, node.src)
            if op.arity is not None and len(ports) != op.arity:
                raise GraphError(f"op '{op.name}' takes {op.arity} inputs, node has {len(ports)}", name, node.src)
            if op.arity is None and not ports:
                raise GraphError(f"op '{op.name}' needs at least one input", name, node.src)
            if (require_params or node.params) and node.shape is not None:
                self._check_params(name, node)
            if node.qparams is not None:
                try:
                    check_qparams(node)
                except QParamsError as exc:
                    raise GraphError(str(exc), name, node.src) from None

    def _check_params(self, name: str, node: Node) -> None:
        expected = self.param_shapes(name)
        if set(expected) != set(node.params):
            raise GraphError(
                f"params {sorted(node.params)} but op '{node.op}' needs {sorted(expected)}", name, node.src
            )
        for key, shape in expected.items():
            if tuple(node.params[key].shape) != tuple(shape):
                raise GraphError(f"param '{key}' has shape {node.params[key].shape}, expected {shape}", name, node.src)
