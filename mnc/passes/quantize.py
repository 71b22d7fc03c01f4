"""int8 quantisation of an optimised graph: sets every node's qparams by the scheme's arithmetic
(mnc/quant/scheme.py) and op rules (mnc/quant/rules.py), from calibrated activation ranges."""

from __future__ import annotations

from mnc.ir.graph import Graph, GraphError
from mnc.ir.node import ChannelQuantized, QParams
from mnc.passes.base import Pass, register
from mnc.quant import rules, scheme
from mnc.quant.bias_correction import corrected


def quantize_int8(
    graph: Graph,
    *,
    activation_ranges: dict[str, list[float]],
    weight_bits: int,
    depthwise_weight_bits: int | None = None,
    bias_corrections: dict[str, list[int]] | None = None,
):
    grown_total = []
    bias_corrections = bias_corrections or {}
    for name in graph.topo():
        node = graph.node(name)
        out = rules.fixed_output(graph, name)
        if out is None:
            if name not in activation_ranges:
                raise GraphError("no calibrated range for this tensor", name, node.src)
            out = scheme.activation_params(*activation_ranges[name])
        weight = bias = None
        if rules.has_int8_weights(node.op):
            input_scale = graph.node(graph.inputs_of(name)[0]).qparams.output.scale
            w = node.params["weight"]
            bits = depthwise_weight_bits if depthwise_weight_bits and graph.is_depthwise(name) else weight_bits
            weight_q, weight_scale = scheme.weight_params(w, bits)
            if "bias" in node.params:
                bias_q, bias_scale, regrown, weight_scale, grown = scheme.bias_params(
                    node.params["bias"], input_scale, weight_scale, w, bits
                )
                weight_q = regrown if regrown is not None else weight_q
                bias = ChannelQuantized(bias_q, bias_scale)
                grown_total += [f"{name}[{c}]" for c in grown]
            weight = ChannelQuantized(weight_q, weight_scale, bits)
        node.qparams = QParams(out, weight, bias)
        if name in bias_corrections:
            node.qparams = corrected(node.qparams, bias_corrections[name])
    return True, {"bias_overflow_resolved": grown_total, "bias_corrected": len(bias_corrections)}


register(
    Pass(
        "quantize_int8",
        "int8 quantisation with calibrated activation ranges",
        quantize_int8,
        after=("fold_bn", "fuse_act", "cleanup"),
        requires=("unquantized",),
        ensures=("quantization_rules",),
        options={
            "activation_ranges": "calibration (--quantize int8 --calib DATA)",
            "weight_bits": "the target's int8 plan",
            "depthwise_weight_bits": "the target's int8 plan",
            "bias_corrections": "bias correction on the calibration data (mnc/quant/bias_correction.py)",
        },
    )
)
