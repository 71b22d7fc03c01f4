"""How every target lowers the IR: a per-target table (op → lowering, activation → lowering) and
one walk over the graph that calls it.

An op's lowering is `lower(ctx, name, node, xs)`: ctx is the target's writer (its `graph` is the IR
being lowered, its `values` what each lowered node produced), name the node's name, node the IR
`Node`, xs the values of its inputs; it returns the node's value as the target holds it (an ONNX
tensor name, a MIL variable, a TFLite tensor index). The graph's input is lowered like an op
(`input`, with no xs): it is the model's input, normalised or quantised as the target needs.

An activation's lowering is `activate(ctx, x, out, name)`: x the value it applies to, out where the
result goes (the ONNX tensor or TFLite tensor to write, Core ML's name of the result), name what
its ops are called; it returns the result.

A target that cannot express something refuses with `Lowering.refuse`: an InputError naming the
target and the layer, located at the spec line that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from mnc.errors import InputError, param
from mnc.ir.graph import Graph
from mnc.ir.node import Node


@dataclass(frozen=True)
class Lowering:
    target: str  # the name in `--target`, for refusals
    ops: Mapping[str, Callable] = field(default_factory=dict)  # IR op (and "input") → lowering
    activations: Mapping[str, Callable] = field(default_factory=dict)  # activation name → lowering
    # Wraps every op's lowering but the input's, for what a target does around each node (ONNX's
    # quantise/dequantise pair, Core ML's names and precision): around(lower, ctx, name, node, xs).
    around: Callable | None = None

    def refuse(self, what: str, name: str, node: Node) -> InputError:
        return InputError(f"{param('target', self.target)} cannot express {what} (layer '{name}')", node.src)

    def lower(self, ctx, name: str, node: Node, xs: list):
        lower = self.ops.get(node.op)
        if lower is None:
            raise self.refuse(f"the op '{node.op}'", name, node)
        if self.around is None or node.op == "input":
            return lower(ctx, name, node, xs)
        return self.around(lower, ctx, name, node, xs)

    def activate(self, ctx, fn: str, x, out, name: str, node: Node):
        """Activation `fn` of layer `node` (for a refusal's location)."""
        activate = self.activations.get(fn)
        if activate is None:
            raise self.refuse(f"the activation '{fn}'", name, node)
        return activate(ctx, x, out, name)


def walk(graph: Graph, ctx, lowering: Lowering) -> None:
    """Lower every node in topological order (the input first: nothing else lacks inputs); each
    node's value goes to ctx.values."""
    for name in graph.topo():
        node = graph.node(name)
        ctx.values[name] = lowering.lower(ctx, name, node, [ctx.values[p] for p in graph.inputs_of(name)])
