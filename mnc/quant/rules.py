"""The op rules of the int8 scheme: how each op's output is quantised, and which ops carry
quantised weights. The quantize_int8 pass applies them and promises them (checked after it runs)."""

from __future__ import annotations

from mnc.ir.graph import Graph
from mnc.ir.node import Affine

# Ops whose output keeps its input's scale and zero point: averages and interpolations of values
# on one grid, and data movement (their integer kernels do not requantise; TFLite's int8 average
# pooling, bilinear resize, reshape and transpose require it).
SAME_SCALE = ("global_avgpool", "flatten", "avgpool", "resize", "per_anchor")
# Softmax's and the logistic sigmoid's outputs lie in [0, 1]: the fixed scale 1/256 (zero point 0;
# int8 runtimes' −128) that TFLite's kernels require of them.
SOFTMAX_OUTPUT = Affine(1.0 / 256.0, 0)
SIGMOID_OUTPUT = SOFTMAX_OUTPUT
# Ops with int8 weights (per output channel) and, where they have one, an int32 bias.
WITH_WEIGHTS = ("conv", "fc")


def fixed_output(graph: Graph, name: str) -> Affine | None:
    """The output quantisation an op's rule dictates, or None where calibration decides it."""
    node = graph.node(name)
    if node.op in SAME_SCALE:
        return graph.node(graph.inputs_of(name)[0]).qparams.output
    if node.op == "softmax":
        return SOFTMAX_OUTPUT
    if node.op == "act" and node.attrs["fn"] == "sigmoid":  # a sigmoid fused into a conv keeps its range
        return SIGMOID_OUTPUT
    return None


def rules_broken(graph: Graph) -> list[str]:
    """Nodes without quantisation parameters, or whose output breaks the rules above."""
    bad = []
    for name in graph.topo():
        q = graph.node(name).qparams
        rule = fixed_output(graph, name) if q is not None else None
        if q is None or (rule is not None and q.output != rule):
            bad.append(name)
    return bad
