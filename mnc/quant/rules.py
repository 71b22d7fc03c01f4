"""The op rules of the int8 scheme: how each op's output is quantised, and which ops carry
quantised weights. Each op's record states its rule (OpDef.int8, OpDef.int8_weights in mnc/ir/ops);
the quantize_int8 pass applies them and promises them (checked after it runs)."""

from __future__ import annotations

from mnc.ir.graph import Graph
from mnc.ir.node import Affine
from mnc.ir.ops import OPS


def has_int8_weights(op: str) -> bool:
    """int8 weights per output channel and, where it has one, an int32 bias."""
    return OPS[op].int8_weights


def fixed_output(graph: Graph, name: str) -> Affine | None:
    """The output quantisation an op's rule dictates, or None where calibration decides it."""
    node = graph.node(name)
    rule = OPS[node.op].int8_rule(node.attrs)
    if rule.grid == "input":
        return graph.node(graph.inputs_of(name)[0]).qparams.output
    return rule.fixed


def rules_broken(graph: Graph) -> list[str]:
    """Nodes without quantisation parameters, or whose output breaks the rules above."""
    bad = []
    for name in graph.topo():
        q = graph.node(name).qparams
        rule = fixed_output(graph, name) if q is not None else None
        if q is None or (rule is not None and q.output != rule):
            bad.append(name)
    return bad
