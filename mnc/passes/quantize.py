"""int8 quantisation of an optimised graph (mnc/quant/scheme.py says what the numbers are).

Reads graph.meta["activation_ranges"] (from mnc/quant/calibrate.py) and graph.meta["weight_bits"];
sets node["qparams"]: "output" for every tensor, "weight" and "bias" for conv/fc. Ops that must
keep their input's scale (pooling, flatten) take it; softmax takes the fixed scale 1/256."""
from __future__ import annotations

from mnc.ir.graph import Graph, GraphError
from mnc.passes.base import PROPERTIES, Pass, register
from mnc.quant import scheme

SAME_SCALE = ("global_avgpool", "flatten")
SOFTMAX = scheme.Affine(1.0 / 256.0, 0)


def quantize_int8(graph: Graph) -> bool:
    ranges = graph.meta.get("activation_ranges")
    if ranges is None:
        raise GraphError("quantize_int8 needs activation ranges: calibrate first (--calib)")
    bits = graph.meta.get("weight_bits", 8)
    grown_total = []
    for name in graph.topo():
        data = graph.node(name)
        op = data["op"]
        producers = graph.inputs_of(name)
        if op in SAME_SCALE:
            out = scheme.Affine(**graph.node(producers[0])["qparams"]["output"])
        elif op == "softmax":
            out = SOFTMAX
        else:
            if name not in ranges:
                raise GraphError("no calibrated range for this tensor", name, data["src"])
            out = scheme.activation_params(*ranges[name])
        qparams = {"output": out.as_dict()}
        if op in ("conv", "fc"):
            input_scale = graph.node(producers[0])["qparams"]["output"]["scale"]
            weight = data["params"]["weight"]
            weight_q, weight_scale = scheme.weight_params(weight, bits)
            bias = data["params"].get("bias")
            if bias is not None:
                bias_q, bias_scale, regrown, weight_scale, grown = scheme.bias_params(
                    bias, input_scale, weight_scale, weight, bits)
                weight_q = regrown if regrown is not None else weight_q
                qparams["bias"] = {"q": bias_q, "scale": bias_scale}
                grown_total += [f"{name}[{c}]" for c in grown]
            qparams["weight"] = {"q": weight_q, "scale": weight_scale, "bits": bits}
        data["qparams"] = qparams
    graph.meta["bias_overflow_resolved"] = grown_total
    return True


def _rules_broken(graph: Graph) -> list[str]:
    """Nodes whose output scale breaks the scheme's rules."""
    bad = []
    for name in graph.nx:
        data = graph.node(name)
        q = data.get("qparams")
        if q is None:
            bad.append(name)
        elif data["op"] in SAME_SCALE and q["output"] != graph.node(graph.inputs_of(name)[0])["qparams"]["output"]:
            bad.append(name)
        elif data["op"] == "softmax" and q["output"] != SOFTMAX.as_dict():
            bad.append(name)
    return bad


PROPERTIES["quantization_rules"] = _rules_broken
register(Pass("quantize_int8", "int8 quantisation with calibrated activation ranges", quantize_int8,
              after=("fold_bn", "fuse_act", "cleanup"), ensures=("quantization_rules",)))
