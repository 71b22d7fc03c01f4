"""IR → ONNX. Reads the IR only; each IR op maps to the ONNX operators that compute it."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mnc.ir.graph import Graph

OPSET = 17
# ONNX Runtime's int8 kernels on x86 without VNNI (AVX2: u8×s8 products summed in pairs into int16)
# can saturate with full 8-bit weights; 7-bit weights keep every pair sum in range.
WEIGHT_BITS = 7
QUANTIZATION = ("QDQ: activations uint8 per-tensor affine; weights int8 per-output-channel symmetric in "
                "[-63, 63] (7-bit, so ONNX Runtime's u8s8 kernels cannot saturate on AVX2 hosts without VNNI); "
                "bias int32 with scale input_scale·weight_scale")
IR_VERSION = 8  # the ONNX IR version of opset 17; loadable by every ONNX Runtime since 1.11
INPUT_NAME = "input"
SUFFIX = ".onnx"


def output_name(graph: Graph) -> str:
    return "probabilities" if graph.node(graph.outputs[0])["op"] == "softmax" else "logits"


def emit(graph: Graph, metadata: dict[str, str], description: str = "") -> bytes:
    model = build_model(graph, metadata, description)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)


def write(graph: Graph, path, metadata: dict[str, str], options) -> None:
    with open(path, "wb") as f:
        f.write(emit(graph, metadata, options.metadata.get("short_description", "")))


def build_model(graph: Graph, metadata: dict[str, str], description: str = "") -> onnx.ModelProto:
    (input_node,) = graph.inputs
    (output_node,) = graph.outputs
    names = {input_node: INPUT_NAME, output_node: output_name(graph)}
    e = _Emitter(names)
    for name in graph.topo():
        data = graph.node(name)
        q = data.get("qparams")
        if data["op"] == "input":
            if q is not None:  # consumers read the input through its quantisation
                e.qdq(name, INPUT_NAME, f"{name}.dq", q["output"])
                e.names[name] = f"{name}.dq"
            continue
        inputs = [e.name(p) for p in graph.inputs_of(name)]
        if q is None:
            _LOWER[data["op"]](e, name, data, inputs)
            continue
        final = e.name(name)
        e.names[name] = f"{name}.float"  # the op computes in float between Dequantize and Quantize
        _LOWER[data["op"]](e, name, data, inputs)
        e.names[name] = final
        e.qdq(name, f"{name}.float", final, q["output"])
    batch = "batch"
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, *graph.node(input_node)["shape"]])]
    outputs = [helper.make_tensor_value_info(names[output_node], TensorProto.FLOAT,
                                             [batch, *graph.node(output_node)["shape"]])]
    onnx_graph = helper.make_graph(e.nodes, graph.name, inputs, outputs, initializer=e.initializers)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mnc", producer_version=metadata.get("mnc.version", ""),
                              doc_string=description)
    model.ir_version = IR_VERSION
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    return model


class _Emitter:
    def __init__(self, names: dict[str, str]):
        self.names = names
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._constants: set[str] = set()

    def name(self, ir_name: str) -> str:
        return self.names.get(ir_name, ir_name)

    def param(self, ir_name: str, key: str, array: np.ndarray) -> str:
        tensor_name = f"{ir_name}.{key}"
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), tensor_name))
        return tensor_name

    def weight(self, ir_name: str, data: dict, key: str) -> str:
        """A conv/fc weight or bias: a float initializer, or for a quantised node its int8/int32
        values through a per-channel DequantizeLinear."""
        q = (data.get("qparams") or {}).get(key)
        if q is None:
            return self.param(ir_name, key, data["params"][key])
        ints = np.asarray(q["q"])
        self.initializers += [
            numpy_helper.from_array(ints, f"{ir_name}.{key}_q"),
            numpy_helper.from_array(np.asarray(q["scale"], dtype=np.float32), f"{ir_name}.{key}_scale"),
            numpy_helper.from_array(np.zeros(len(q["scale"]), dtype=ints.dtype), f"{ir_name}.{key}_zero_point"),
        ]
        return self.node("DequantizeLinear", [f"{ir_name}.{key}_q", f"{ir_name}.{key}_scale",
                                              f"{ir_name}.{key}_zero_point"], f"{ir_name}.{key}", f"{ir_name}.{key}_dq",
                         axis=0)

    def qdq(self, ir_name: str, source: str, target: str, q: dict) -> None:
        """Quantise `source` to uint8 and back into `target`: the QDQ form ONNX Runtime turns into
        integer kernels."""
        scale, zero_point = f"{ir_name}.out_scale", f"{ir_name}.out_zero_point"
        self.initializers += [numpy_helper.from_array(np.asarray(q["scale"], dtype=np.float32), scale),
                              numpy_helper.from_array(np.asarray(q["zero_point"], dtype=np.uint8), zero_point)]
        self.node("QuantizeLinear", [source, scale, zero_point], f"{ir_name}.q", f"{ir_name}.quantize")
        self.node("DequantizeLinear", [f"{ir_name}.q", scale, zero_point], target, f"{ir_name}.dequantize")

    def constant(self, name: str, value: float) -> str:
        if name not in self._constants:
            self._constants.add(name)
            self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, node_name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=node_name, **attrs))
        return output

    def activation(self, fn: str | None, x: str, output: str, node_name: str) -> str:
        if fn is None or fn == "identity":
            return self.node("Identity", [x], output, node_name) if x != output else x
        if fn == "relu":
            return self.node("Relu", [x], output, node_name)
        if fn == "relu6":
            # Clip with its bounds as inputs (opset ≥ 11): the form ONNX Runtime fuses into Conv.
            return self.node("Clip", [x, self.constant("relu6.min", 0.0), self.constant("relu6.max", 6.0)],
                             output, node_name)
        if fn == "sigmoid":
            return self.node("Sigmoid", [x], output, node_name)
        if fn == "hswish":
            return self.node("HardSwish", [x], output, node_name)  # opset ≥ 14: x·relu6(x + 3)/6
        if fn == "hsigmoid":
            # ONNX's defaults (alpha 0.2) are Keras's; MobileNet's hard sigmoid is relu6(x + 3)/6.
            return self.node("HardSigmoid", [x], output, node_name, alpha=1.0 / 6.0, beta=0.5)
        raise NotImplementedError(f"ONNX lowering of activation '{fn}'")


def _with_fused_act(e: _Emitter, name: str, data: dict, op_type: str, inputs: list[str], **attrs) -> None:
    fn = data["attrs"].get("fused_act")
    out = e.name(name)
    if fn is None:
        e.node(op_type, inputs, out, name, **attrs)
    else:
        e.node(op_type, inputs, f"{name}.preact", name, **attrs)
        e.activation(fn, f"{name}.preact", out, f"{name}.act")


def _conv(e: _Emitter, name: str, data: dict, xs: list[str]) -> None:
    a = data["attrs"]
    inputs = [xs[0], e.weight(name, data, "weight")]
    if a["bias"]:
        inputs.append(e.weight(name, data, "bias"))
    _with_fused_act(e, name, data, "Conv", inputs, kernel_shape=a["kernel"], strides=a["stride"], pads=a["pads"],
                    group=a["groups"], dilations=[1, 1])


def _batchnorm(e: _Emitter, name: str, data: dict, xs: list[str]) -> None:
    p = data["params"]
    inputs = [xs[0]] + [e.param(name, k, p[k]) for k in ("gamma", "beta", "mean", "var")]
    e.node("BatchNormalization", inputs, e.name(name), name, epsilon=float(data["attrs"]["eps"]))


def _act(e: _Emitter, name: str, data: dict, xs: list[str]) -> None:
    e.activation(data["attrs"]["fn"], xs[0], e.name(name), name)


def _add(e: _Emitter, name: str, data: dict, xs: list[str]) -> None:
    e.node("Add" if len(xs) == 2 else "Sum", xs, e.name(name), name)


def _fc(e: _Emitter, name: str, data: dict, xs: list[str]) -> None:
    inputs = [xs[0], e.weight(name, data, "weight")]
    if data["attrs"]["bias"]:
        inputs.append(e.weight(name, data, "bias"))
    _with_fused_act(e, name, data, "Gemm", inputs, transB=1)


_LOWER = {
    "conv": _conv,
    "batchnorm": _batchnorm,
    "act": _act,
    "add": _add,
    "mul": lambda e, n, d, xs: e.node("Mul", xs, e.name(n), n),
    "global_avgpool": lambda e, n, d, xs: e.node("GlobalAveragePool", xs, e.name(n), n),
    "flatten": lambda e, n, d, xs: e.node("Flatten", xs, e.name(n), n, axis=1),
    "fc": _fc,
    "softmax": lambda e, n, d, xs: e.node("Softmax", xs, e.name(n), n, axis=1),
}


def read_metadata(path, shown: str) -> dict[str, str]:
    """The metadata_props of a saved model; a file that is not an ONNX model is bad input."""
    from mnc.errors import InputError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for corrupt input
        raise InputError(f"'{shown}' is not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise InputError(f"'{shown}' is not a readable ONNX model (it has no graph)")
    return {p.key: p.value for p in model.metadata_props}
