"""Matching a checkpoint's modules with the network's weighted layers in the order of computation.

A file that lists its layers as the framework computes them (a Keras model's layers; a PyTorch state
dict, whose order is its modules' registration order) is matched with the IR's nodes that have
parameters, one module after another, each by its kind and every parameter's shape. The IR's order is
only partial: parallel branches (a block's shortcut beside its main path) may come in either order, so
a module may fill any layer whose weighted predecessors are all filled already (the file's order is one
order in which the network can be computed), and a checkpoint lists a branch whole: a module that can
continue the branch of the module before it (fill a layer that reads that one's) does. Where more than
one such layer fits a module's shapes, each is tried; the match must be the only one that places every
module. Two complete matches are an error (the shapes cannot tell those layers apart), never a guess,
and so is none: the first module that fits no layer that may come next is reported with the layers it
was tried against.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from math import prod
from typing import Callable

from mnc.errors import Diagnostic, InputError, Loc
from mnc.ir.graph import Graph
from mnc.weights.layouts.layout import Slot, param_nodes, weighted

MAX_STEPS = 200_000  # modules placed over all tries; beyond it the match is refused as too ambiguous


@dataclass(frozen=True)
class Module:
    """A layer of the checkpoint: its name and its variables (name → the tensor's key and shape)."""

    name: str
    kind: str  # the IR op it may fill ("conv" also fills "fc": any weighted op)
    keys: dict[str, str]
    shapes: dict[str, tuple]

    def describe(self) -> str:
        return f"'{self.name}' ({', '.join(f'{v} {fmt(s)}' for v, s in self.shapes.items())})"


@dataclass(frozen=True)
class Naming:
    """What a framework calls things: `names(op, param)` lists the variables that may hold an IR
    parameter; a module's kind is told by the first of `kinds`' variables it has."""

    source: str  # what the modules are, in words: "the timm state dict's modules"
    names: Callable[[str, str], list[str]]
    kinds: dict[str, str]
    unit: str = "module"  # what the framework calls one of them


def fmt(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def group(tensors: dict[str, tuple], separator: str, kinds: dict[str, str], ignored) -> list[Module]:
    """The modules of a checkpoint, in the order their tensors come (`tensors`: key → shape, in order);
    only modules with a variable that tells their kind."""
    grouped: dict[str, dict[str, str]] = {}
    for key in tensors:
        if ignored(key):
            continue
        module, _, variable = key.rpartition(separator)
        grouped.setdefault(module, {})[variable] = key
    modules = []
    for name, keys in grouped.items():
        kind = next((op for variable, op in kinds.items() if variable in keys), None)
        if kind is not None:
            modules.append(Module(name, kind, keys, {v: tuple(tensors[k]) for v, k in keys.items()}))
    return modules


class _Network:
    """The nodes with parameters, each with the ones it depends on (its weighted ancestors)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = param_nodes(graph)
        weighted_nodes = set(self.nodes)
        nearest: dict[str, frozenset] = {}  # the weighted nodes a value depends on without another between
        for node in graph.topo():
            nearest[node] = frozenset().union(
                *(({i} if i in weighted_nodes else nearest[i]) for i in graph.inputs_of(node))
            )
        self.after = {n: nearest[n] for n in self.nodes}

    def ready(self, placed: dict[str, str]) -> list[str]:
        """The layers that may come next: not placed, and every weighted layer they read placed."""
        return [n for n in self.nodes if n not in placed and all(a in placed for a in self.after[n])]

    def describe(self, node: str) -> str:
        data = self.graph.node(node)
        shapes = self.graph.param_shapes(node)
        return f"'{node}' ({data.op}: {', '.join(f'{p} {fmt(s)}' for p, s in shapes.items())})"


def _fit(graph: Graph, naming: Naming, module: Module, node: str) -> list[Slot] | None:
    """The slots a module fills if it fits a node: its kind, exactly the variables the node's
    parameters need, each of the node's shape (a dense layer's weight may be stored as a 1×1 kernel)."""
    op = graph.node(node).op
    if module.kind != op and not (weighted(module.kind) and weighted(op)):
        return None
    slots, used = [], set()
    for param, shape in graph.param_shapes(node).items():
        variable = next((v for v in naming.names(op, param) if v in module.keys), None)
        if variable is None:
            return None
        found = module.shapes[variable]
        if found != tuple(shape) and not (op == "fc" and prod(found) == prod(shape) and found[:1] == shape[:1]):
            return None
        slots.append(Slot(module.keys[variable], node, param))
        used.add(variable)
    return slots if used == set(module.keys) else None


@dataclass
class _Search:
    network: _Network
    naming: Naming
    modules: list[Module]
    found: list[dict]  # complete matches: node → module name
    deepest: tuple = (-1, [])  # (the first module no layer took, the layers that could have come next)
    steps: int = 0

    def run(self, i: int, placed: dict[str, str], previous: str | None = None) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS or len(self.found) > 1:
            return
        ready = self.network.ready(placed)
        if i == len(self.modules) and not ready:
            self.found.append(dict(placed))
            return
        fits = []
        if i < len(self.modules):
            fits = [n for n in ready if _fit(self.network.graph, self.naming, self.modules[i], n) is not None]
        if not fits:
            if i > self.deepest[0]:
                self.deepest = (i, ready)
            return
        # A checkpoint lists a branch whole: a module that can continue the branch of the one before it
        # (a layer reading that module's layer) does.
        continuing = [n for n in fits if previous in self.network.after[n]]
        for node in continuing or fits:
            placed[node] = self.modules[i].name
            self.run(i + 1, placed, node)
            del placed[node]


def match(graph: Graph, modules: list[Module], naming: Naming, file: Loc, note: str = "") -> list[Slot]:
    """Every parameter's slot, the modules matched with the weighted layers in the order of
    computation; an InputError where no match or more than one places every module."""
    network = _Network(graph)
    search = _Search(network, naming, modules, [])
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(modules) + 200))
    try:
        search.run(0, {})
    finally:
        sys.setrecursionlimit(limit)
    where = f"{naming.source}, matched in order of computation"
    if search.steps > MAX_STEPS:
        raise InputError(f"{where}: too many ways to match them with this network's layers; name a layout", file)
    if len(search.found) > 1:
        raise _ambiguous(network, modules, search.found, where, naming.unit)
    if not search.found:
        raise _mismatch(network, modules, search.deepest, where, file, note, naming.unit)
    by_name = {m.name: m for m in modules}
    return [s for n in network.nodes for s in _fit(graph, naming, by_name[search.found[0][n]], n)]


def _ambiguous(network: _Network, modules: list[Module], found: list[dict], where: str, unit: str) -> InputError:
    one, other = found
    node = next(n for n in network.nodes if one[n] != other[n])
    twin = next(n for n in network.nodes if other[n] == one[node])
    module = next(m for m in modules if m.name == one[node])
    return InputError(
        f"{where}: {unit} {module.describe()} fits both layer '{node}' and layer '{twin}', and either way every "
        "module finds a layer: the shapes cannot tell which is which (parallel branches are matched by shapes, "
        "never guessed); save the weights under mnc's names or name a layout",
        network.graph.node(node).src,
    )


def _mismatch(network: _Network, modules: list[Module], deepest: tuple, where: str, file: Loc, note: str, unit: str):
    i, ready = deepest
    notes = [(note, None)] if note else []
    diagnostic = _mismatch_diagnostic(network, modules, i, ready, where, file, unit)
    diagnostic.notes += notes
    return InputError(diagnostic)


def _mismatch_diagnostic(
    network: _Network, modules: list[Module], i: int, ready: list[str], where: str, file: Loc, unit: str
):
    if i >= len(modules):
        node = ready[0]
        last = f"its last {unit} is {modules[-1].describe()}" if modules else f"it has no weighted {unit}"
        more = f", and {len(ready) - 1} other layer(s) that could come next," if len(ready) > 1 else ""
        return Diagnostic(
            f"{where}: the checkpoint ends where this network still has layer {network.describe(node)}{more} "
            f"to fill ({last})",
            network.graph.node(node).src,
        )
    module = modules[i]
    if not ready:
        rest = len(modules) - i
        return Diagnostic(
            f"{where}: {unit} {module.describe()} and {rest - 1} more come after the network's last weighted "
            f"layer '{network.nodes[-1]}': the network has no place for them",
            file,
        )
    node = ready[0]
    others = "; ".join(network.describe(n) for n in ready[1:])
    also = f" (nor the other layer(s) that could come next: {others})" if others else ""
    after = f", after '{modules[i - 1].name}'" if i else ""
    return Diagnostic(
        f"{where}: {unit} {module.describe()}{after} does not fit the network's next layer "
        f"{network.describe(node)}{also}",
        network.graph.node(node).src,
    )
