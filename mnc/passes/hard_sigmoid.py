"""The hard sigmoid relu6(x + 3)/6 as two affine maps, for a runtime without it (TFLite, whose
converter writes it as ADD with a fused RELU6, then MUL): affine(x; 1, 3, relu6), then
affine(·; 1/6, 0). Both hold one value for every channel, which a target stores as its runtime's
scalar constant (TFLite's int8 kernels take it quantised, 127 at value/127).

An `act` node keeps its name and grid on the second map (the layers after it read it unchanged);
the first is NODE.plus3, on the fixed int8 grid of [0, 6] (scale 6/255, zero point 0) where the
graph is quantised, as TensorFlow's converter holds relu6's output. An activation fused into a conv
or fc is unfused: the layer keeps its name, the maps after it are NODE.act.plus3 and NODE.act."""

from __future__ import annotations

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.node import Affine, QParams
from mnc.passes.rewriting import Region, Rewrite

HSIGMOID = "hsigmoid"
RELU6_GRID = Affine(6.0 / 255.0, 0)
# The exact constants (float64): each target rounds them as it stores them, as it did its own.
PLUS3 = {"scale": np.array([1.0]), "shift": np.array([3.0])}
SIXTH = {"scale": np.array([1.0 / 6.0]), "shift": np.array([0.0])}
ONE_VALUE = {"per_channel": False}


def _decompose(graph: Graph) -> list[Region]:
    regions = []
    for name in graph.topo():
        node = graph.node(name)
        if node.op == "act" and node.attrs["fn"] == HSIGMOID:
            regions.append(_act(graph, name))
        elif node.attrs.get("fused_act") == HSIGMOID:
            regions.append(_fused(graph, name))
    return regions


def _act(graph: Graph, name: str) -> Region:
    node = graph.node(name)
    (x,) = graph.inputs_of(name)
    plus3 = _map(graph, f"{name}.plus3", x, PLUS3, node, "relu6")
    graph.disconnect(x, name)
    graph.connect(plus3, name, 0)
    node.op, node.attrs, node.params = "affine", dict(ONE_VALUE), dict(SIXTH)
    return Region((plus3, name), (name,))


def _fused(graph: Graph, name: str) -> Region:
    node = graph.node(name)
    if node.qparams is not None:
        raise ValueError(f"'{name}': a quantised layer has no grid for its result before the hard sigmoid")
    node.attrs["fused_act"] = None
    users = graph.users(name)
    plus3 = _map(graph, f"{name}.act.plus3", name, PLUS3, node, "relu6")
    gate = _map(graph, f"{name}.act", plus3, SIXTH, node, None)
    graph.replace_uses(name, gate, users)
    graph.outputs = [gate if o == name else o for o in graph.outputs]
    graph.output_labels = {gate if k == name else k: v for k, v in graph.output_labels.items()}
    return Region((name, plus3, gate), (name,))


def _map(graph: Graph, name: str, x: str, params: dict, like, fused_act: str | None) -> str:
    attrs = {**ONE_VALUE, **({"fused_act": fused_act} if fused_act else {})}
    graph.add(name, "affine", [x], attrs=attrs, params=dict(params), src=like.src)
    graph.node(name).shape = like.shape
    if like.qparams is not None:
        graph.node(name).qparams = QParams(RELU6_GRID if fused_act == "relu6" else like.qparams.output)
    return name


REWRITE = Rewrite(
    "hard_sigmoid",
    "the hard sigmoid relu6(x + 3)/6 as affine maps: x + 3 with a fused relu6, then ·1/6",
    _decompose,
    removes_activations=(HSIGMOID,),
)
