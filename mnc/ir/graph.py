"""The IR graph: a thin wrapper over networkx.DiGraph.

Nodes are keyed by stable, readable names derived from the spec (`stage3.block1.dw`).
Each node holds flat, serialisable data:
    op      name of an op in mnc.ir.ops.OPS
    attrs   op attributes (kernel, stride, explicit pads, groups, fused activation, eps, ...)
    params  numpy arrays in canonical layout (conv weight OIHW, fc weight [out, in]); empty
            until weights are initialised or loaded
    shape   per-sample output shape, filled by mnc.ir.shapes.infer_shapes
    src     mnc.errors.Loc of the spec text that produced the node
Edges carry `port`, the position of the producer among the consumer's inputs.
"""
from __future__ import annotations

import copy

import networkx as nx

from mnc.errors import Loc
from mnc.ir.ops import OPS


class GraphError(Exception):
    """A malformed graph: always a bug in whatever produced it, never bad user input."""

    def __init__(self, message: str, node: str | None = None, src: Loc | None = None):
        where = f" (node '{node}'" + (f", from {src}" if src else "") + ")" if node else ""
        super().__init__(message + where)
        self.node, self.src = node, src


class Graph:
    def __init__(self, name: str = "network"):
        self.name = name
        self.nx = nx.DiGraph()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.meta: dict = {}

    # ---- building ------------------------------------------------------------

    def add(self, name: str, op: str, inputs=(), *, attrs=None, params=None, src: Loc | None = None) -> str:
        if name in self.nx:
            raise GraphError("duplicate node name", name, src)
        self.nx.add_node(name, op=op, attrs=dict(attrs or {}), params=dict(params or {}), shape=None, src=src)
        for port, producer in enumerate(inputs):
            if producer not in self.nx:
                raise GraphError(f"input '{producer}' does not exist", name, src)
            if self.nx.has_edge(producer, name):
                raise GraphError(f"'{producer}' feeds this node twice; the IR has one edge per pair", name, src)
            self.nx.add_edge(producer, name, port=port)
        if op == "input":
            self.inputs.append(name)
        return name

    # ---- queries ---------------------------------------------------------------

    def node(self, name: str) -> dict:
        return self.nx.nodes[name]

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def inputs_of(self, name: str) -> list[str]:
        pred = self.nx.pred[name]  # producer → edge data; on the hot path of every graph walk
        if len(pred) < 2:
            return list(pred)
        return sorted(pred, key=lambda producer: pred[producer]["port"])

    def users(self, name: str) -> list[str]:
        return list(self.nx.successors(name))

    def topo(self) -> list[str]:
        return list(nx.topological_sort(self.nx))

    def ops(self) -> list[str]:
        """The op of every node in topological order: the usual thing to assert in pass tests."""
        return [self.node(n)["op"] for n in self.topo()]

    def copy(self) -> "Graph":
        """A copy whose structure, attrs and params dicts can be changed without touching this one.
        Parameter arrays are shared: passes replace arrays, they never write into them."""
        other = Graph(self.name)
        other.nx = self.nx.copy()
        for name in other.nx:
            data = other.nx.nodes[name]
            data["attrs"] = copy.deepcopy(data["attrs"])
            data["params"] = dict(data["params"])
        other.inputs, other.outputs, other.meta = list(self.inputs), list(self.outputs), copy.deepcopy(self.meta)
        return other

    # ---- checking ---------------------------------------------------------------

    def validate(self, *, require_params: bool = False) -> None:
        """Raise GraphError on a malformed graph: unknown ops, wrong arity or ports, cycles,
        missing outputs or source positions, and (after shape inference) parameter shapes."""
        if not nx.is_directed_acyclic_graph(self.nx):
            cycle = nx.find_cycle(self.nx)
            raise GraphError("graph has a cycle: " + " → ".join(u for u, _ in cycle), cycle[0][0])
        if not self.outputs:
            raise GraphError("graph has no outputs")
        for out in self.outputs:
            if out not in self.nx:
                raise GraphError(f"graph output '{out}' is not a node")
        for name, data in self.nx.nodes(data=True):
            src = data.get("src")
            op = OPS.get(data.get("op"))
            if op is None:
                raise GraphError(f"unknown op {data.get('op')!r}", name, src)
            if src is None:
                raise GraphError("node has no source position", name)
            ports = sorted(p for _, _, p in self.nx.in_edges(name, data="port"))
            if ports != list(range(len(ports))):
                raise GraphError(f"input ports {ports} are not 0..{len(ports) - 1}", name, src)
            if op.arity is not None and len(ports) != op.arity:
                raise GraphError(f"op '{op.name}' takes {op.arity} inputs, node has {len(ports)}", name, src)
            if op.arity is None and not ports:
                raise GraphError(f"op '{op.name}' needs at least one input", name, src)
            if (require_params or data["params"]) and data["shape"] is not None:
                self._check_params(name, data, op, src)

    def _check_params(self, name: str, data: dict, op, src) -> None:
        in_shapes = [self.node(p)["shape"] for p in self.inputs_of(name)]
        expected = op.param_shapes(data["attrs"], in_shapes)
        if set(expected) != set(data["params"]):
            raise GraphError(f"params {sorted(data['params'])} but op '{op.name}' needs {sorted(expected)}", name, src)
        for key, shape in expected.items():
            if tuple(data["params"][key].shape) != tuple(shape):
                raise GraphError(f"param '{key}' has shape {data['params'][key].shape}, expected {shape}", name, src)
