"""Fuse an activation into the conv/fc that produces its input, as the `fused_act` attribute.

Which activations fuse is the registry's `fusable` (mnc/ir/activations.py), or the subset given as
the `activations` option (a target whose int8 kernels fuse only some, TFLite's RELU and RELU6,
asks for those: the others keep their own tensor and quantisation). Each backend lowers
the attribute the way its runtime wants it (ONNX: Conv then Clip/Relu, which ONNX Runtime fuses at
load; TFLite: the fused activation field; MIL: conv then relu6)."""

from __future__ import annotations

from mnc.ir.activations import FUSABLE
from mnc.ir.graph import Graph
from mnc.passes.base import Pass, absorbing_producer, register


def fuse_act(graph: Graph, activations: tuple[str, ...] = FUSABLE) -> bool:
    changed = False
    for name in graph.topo():
        if name not in graph or graph.node(name).op != "act" or graph.node(name).attrs["fn"] not in activations:
            continue
        producer = absorbing_producer(graph, name)
        if producer is None:
            continue
        graph.node(producer).attrs["fused_act"] = graph.node(name).attrs["fn"]
        graph.absorb(producer, name)
        changed = True
    return changed


register(
    Pass(
        "fuse_act",
        "fuse " + ", ".join(FUSABLE) + " into the preceding conv/fc",
        fuse_act,
        after=("fold_bn",),
        requires=("unquantized",),
        ensures=("activations_fused",),
    )
)
