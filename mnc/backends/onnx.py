"""The ONNX target: IR → ONNX (opset 17), run by ONNX Runtime. Reads the IR only; each IR op and
activation maps to the ONNX operators that compute it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mnc.artifact import ArtifactRecord
from mnc.backends.lowering import Lowering, walk
from mnc.backends.onnx_int8 import (
    DEPTHWISE_WEIGHT_BITS,
    QUANTIZATION,
    WEIGHT_BITS,
    instrumented,
    layers_check,
    saturation_check,
)
from mnc.backends.onnx_runtime import ort_timer, run_onnx
from mnc.backends.target import (
    DYNAMIC_BATCH,
    INPUT_NAME,
    Check,
    Choice,
    Executor,
    Int8Plan,
    Target,
    Timer,
    fixed_batch,
    output_names,
)
from mnc.errors import InputError
from mnc.ir.graph import Graph
from mnc.ir.node import Node
from mnc.ir.ops import dilation
from mnc.ir.ops.affine import channels
from mnc.ir.ops.graph_input import pixel_scale

OPSET = 17
IR_VERSION = 8  # the ONNX IR version of opset 17; loadable by every ONNX Runtime since 1.11


def emit(
    graph: Graph,
    metadata: dict[str, str],
    description: str = "",
    lowering: Lowering | None = None,
    batch: int | None = None,
) -> bytes:
    model = build_model(graph, metadata, description, lowering, batch)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)


def build_model(
    graph: Graph,
    metadata: dict[str, str],
    description: str = "",
    lowering: Lowering | None = None,
    batch: int | None = None,
) -> onnx.ModelProto:
    """An image input (the IR's input takes pixels: the image_input rewrite) is uint8. lowering:
    ONNX's (LOWERING, or MOBILE_LOWERING), under the name of the target that writes the model
    (.ort's converts it). batch: the input's and every output's first dimension, fixed (None:
    symbolic, "batch")."""
    (input_node,) = graph.inputs
    names = {input_node: INPUT_NAME, **dict(zip(graph.outputs, output_names(graph)))}
    e = _Emitter(graph, names, lowering or LOWERING, batch)
    walk(graph, e, e.lowering)
    names = e.names
    batch = "batch" if batch is None else batch
    image = pixel_scale(graph.node(input_node).attrs) is not None
    input_type = TensorProto.UINT8 if image else TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(INPUT_NAME, input_type, [batch, *graph.node(input_node).shape])]
    outputs = [
        helper.make_tensor_value_info(names[out], TensorProto.FLOAT, [batch, *graph.node(out).shape])
        for out in graph.outputs
    ]
    onnx_graph = helper.make_graph(e.nodes, graph.name, inputs, outputs, initializer=e.initializers)
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="mnc",
        producer_version=metadata.get("mnc.version", ""),
        doc_string=description,
    )
    model.ir_version = IR_VERSION
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    return model


class _Emitter:
    """The ONNX graph being written: its nodes and initialisers. `names` says where a node's output
    goes (the model's output names, else the IR name); `values` holds what each lowered node produced."""

    def __init__(self, graph: Graph, names: dict[str, str], lowering: Lowering, batch: int | None):
        self.graph = graph
        self.lowering = lowering
        self.batch = batch  # None: symbolic
        self.names = names
        self.values: dict[str, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._constants: set[str] = set()

    def name(self, ir_name: str) -> str:
        return self.names.get(ir_name, ir_name)

    def param(self, ir_name: str, key: str, array: np.ndarray) -> str:
        tensor_name = f"{ir_name}.{key}"
        self.initializers.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), tensor_name))
        return tensor_name

    def weight(self, ir_name: str, data, key: str) -> str:
        """A conv/fc weight or bias: a float initializer, or for a quantised node its int8/int32
        values through a per-channel DequantizeLinear."""
        q = getattr(data.qparams, key) if data.qparams is not None else None
        if q is None:
            return self.param(ir_name, key, data.params[key])
        ints = np.asarray(q.q)
        self.initializers += [
            numpy_helper.from_array(ints, f"{ir_name}.{key}_q"),
            numpy_helper.from_array(np.asarray(q.scale, dtype=np.float32), f"{ir_name}.{key}_scale"),
            numpy_helper.from_array(np.zeros(len(q.scale), dtype=ints.dtype), f"{ir_name}.{key}_zero_point"),
        ]
        return self.node(
            "DequantizeLinear",
            [f"{ir_name}.{key}_q", f"{ir_name}.{key}_scale", f"{ir_name}.{key}_zero_point"],
            f"{ir_name}.{key}",
            f"{ir_name}.{key}_dq",
            axis=0,
        )

    def qdq(self, ir_name: str, source: str, target: str, q) -> None:
        """Quantise `source` to uint8 and back into `target`: the QDQ form ONNX Runtime turns into
        integer kernels."""
        scale, zero_point = f"{ir_name}.out_scale", f"{ir_name}.out_zero_point"
        self.initializers += [
            numpy_helper.from_array(np.asarray(q.scale, dtype=np.float32), scale),
            numpy_helper.from_array(np.asarray(q.zero_point, dtype=np.uint8), zero_point),
        ]
        self.node("QuantizeLinear", [source, scale, zero_point], f"{ir_name}.q", f"{ir_name}.quantize")
        self.node("DequantizeLinear", [f"{ir_name}.q", scale, zero_point], target, f"{ir_name}.dequantize")

    def int64(self, name: str, values) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def constant(self, name: str, value: float) -> str:
        if name not in self._constants:
            self._constants.add(name)
            self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, node_name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=node_name, **attrs))
        return output

    def activation(self, fn: str | None, x: str, output: str, node_name: str, node) -> str:
        return self.lowering.activate(self, fn or "identity", x, output, node_name, node)


def _relu6(e: _Emitter, x: str, out: str, name: str) -> str:
    # Clip with its bounds as inputs (opset ≥ 11): the form ONNX Runtime fuses into Conv.
    return e.node("Clip", [x, e.constant("relu6.min", 0.0), e.constant("relu6.max", 6.0)], out, name)


def _input(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    """The model's input; an image's 8-bit pixels (uint8) cast to float; read through its
    quantisation by its consumers in an int8 model."""
    x = INPUT_NAME
    scale = pixel_scale(node.attrs)
    if scale is not None:
        if scale != 1:
            raise e.lowering.refuse(
                f"pixels scaled by {scale:g} on the way in (ONNX casts them as they are)", name, node
            )
        x = e.node("Cast", [INPUT_NAME], f"{INPUT_NAME}.float", "input_cast", to=TensorProto.FLOAT)
    if node.qparams is None:
        return x
    e.qdq(name, x, f"{name}.dq", node.qparams.output)
    return f"{name}.dq"


def _quantised(lower, e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    """A quantised node computes in float between Dequantize and Quantize: its op writes `NAME.float`,
    which is quantised and dequantised into the node's output."""
    if node.qparams is None:
        return lower(e, name, node, xs)
    final = e.name(name)
    e.names[name] = f"{name}.float"
    lower(e, name, node, xs)
    e.names[name] = final
    e.qdq(name, f"{name}.float", final, node.qparams.output)
    return final


def _with_fused_act(e: _Emitter, name: str, node: Node, op_type: str, inputs: list[str], **attrs) -> str:
    fn = node.attrs.get("fused_act")
    out = e.name(name)
    if fn is None:
        return e.node(op_type, inputs, out, name, **attrs)
    e.node(op_type, inputs, f"{name}.preact", name, **attrs)
    return e.activation(fn, f"{name}.preact", out, f"{name}.act", node)


def _conv(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    a = node.attrs
    inputs = [xs[0], e.weight(name, node, "weight")]
    if a["bias"]:
        inputs.append(e.weight(name, node, "bias"))
    return _with_fused_act(
        e,
        name,
        node,
        "Conv",
        inputs,
        kernel_shape=a["kernel"],
        strides=a["stride"],
        pads=a["pads"],
        group=a["groups"],
        dilations=dilation(a),
    )


def _batchnorm(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    p = node.params
    inputs = [xs[0]] + [e.param(name, k, p[k]) for k in ("gamma", "beta", "mean", "var")]
    return e.node("BatchNormalization", inputs, e.name(name), name, epsilon=float(node.attrs["eps"]))


def _affine(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    """x·scale + shift: Mul, then Add, their constants shaped to broadcast over the channels."""
    ndim = len(node.shape) + 1
    scale, shift = (e.param(name, k, channels(node.params[k], ndim)) for k in ("scale", "shift"))
    scaled = e.node("Mul", [xs[0], scale], f"{name}.scaled", f"{name}.mul")
    return _with_fused_act(e, name, node, "Add", [scaled, shift])


def _act(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    return e.activation(node.attrs["fn"], xs[0], e.name(name), name, node)


def _add(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    return e.node("Add" if len(xs) == 2 else "Sum", xs, e.name(name), name)


def _fc(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    inputs = [xs[0], e.weight(name, node, "weight")]
    if node.attrs["bias"]:
        inputs.append(e.weight(name, node, "bias"))
    return _with_fused_act(e, name, node, "Gemm", inputs, transB=1)


def _resize(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    # Output size given as `sizes` (not a scale): the source coordinate is then computed from the two
    # sizes, as PyTorch's interpolate(size=…, align_corners=False) does. A symbolic batch is read from
    # the input (Shape, which NNAPI lacks); a fixed one is a constant like the rest.
    if e.batch is not None:
        full = e.int64(f"{name}.sizes", [e.batch, node.shape[0], *node.attrs["size"]])
    else:
        sizes = e.int64(f"{name}.sizes", [node.shape[0], *node.attrs["size"]])
        batch_sizes = e.node("Shape", [xs[0]], f"{name}.in_shape", f"{name}.shape", start=0, end=1)
        full = e.node("Concat", [batch_sizes, sizes], f"{name}.out_shape", f"{name}.out_shape", axis=0)
    return e.node(
        "Resize",
        [xs[0], "", "", full],
        e.name(name),
        name,
        mode="linear",
        coordinate_transformation_mode="half_pixel",
    )


def _per_anchor(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    k = node.attrs["columns"]
    e.node("Transpose", xs, f"{name}.nhwc", f"{name}.transpose", perm=[0, 2, 3, 1])
    return e.node("Reshape", [f"{name}.nhwc", e.int64(f"{name}.shape", [0, -1, k])], e.name(name), name)


def _gelu(e: _Emitter, x: str, out: str, name: str) -> str:
    """x·(1 + erf(x/√2))/2: opset 17 has no Gelu; ONNX Runtime fuses these five nodes into its kernel."""
    scaled = e.node("Div", [x, e.constant("gelu.sqrt2", math.sqrt(2.0))], f"{out}.scaled", f"{name}.scale")
    erf = e.node("Erf", [scaled], f"{out}.erf", f"{name}.erf")
    shifted = e.node("Add", [erf, e.constant("gelu.one", 1.0)], f"{out}.shifted", f"{name}.shift")
    product = e.node("Mul", [x, shifted], f"{out}.product", f"{name}.product")
    return e.node("Mul", [product, e.constant("gelu.half", 0.5)], out, name)


ACTIVATIONS = {
    "relu": lambda e, x, out, name: e.node("Relu", [x], out, name),
    "relu6": _relu6,
    "sigmoid": lambda e, x, out, name: e.node("Sigmoid", [x], out, name),
    # Opset 17 has no SiLU: x·sigmoid(x), which ONNX Runtime fuses back into one kernel.
    "silu": lambda e, x, out, name: e.node(
        "Mul", [x, e.node("Sigmoid", [x], out + ".gate", name + ".gate")], out, name
    ),
    "gelu": _gelu,
    "hswish": lambda e, x, out, name: e.node("HardSwish", [x], out, name),  # opset ≥ 14: x·relu6(x + 3)/6
    # ONNX's defaults (alpha 0.2) are Keras's; MobileNet's hard sigmoid is relu6(x + 3)/6.
    "hsigmoid": lambda e, x, out, name: e.node("HardSigmoid", [x], out, name, alpha=1.0 / 6.0, beta=0.5),
    "identity": lambda e, x, out, name: e.node("Identity", [x], out, name) if x != out else x,
}

OPS = {
    "input": _input,
    "conv": _conv,
    "batchnorm": _batchnorm,
    "affine": _affine,
    "act": _act,
    "add": _add,
    "mul": lambda e, n, node, xs: e.node("Mul", xs, e.name(n), n),
    "global_avgpool": lambda e, n, node, xs: e.node("GlobalAveragePool", xs, e.name(n), n),
    "flatten": lambda e, n, node, xs: e.node("Flatten", xs, e.name(n), n, axis=1),
    "fc": _fc,
    "softmax": lambda e, n, node, xs: e.node("Softmax", xs, e.name(n), n, axis=1),
    "avgpool": lambda e, n, node, xs: e.node(
        "AveragePool", xs, e.name(n), n, kernel_shape=node.attrs["kernel"], strides=node.attrs["stride"]
    ),
    "resize": _resize,
    "concat": lambda e, n, node, xs: e.node("Concat", xs, e.name(n), n, axis=1),
    "per_anchor": _per_anchor,
}
LOWERING = Lowering("onnx", OPS, ACTIVATIONS, around=_quantised)


# ---- the mobile form: operators ONNX Runtime Mobile's NNAPI and Core ML providers take ----------------
#
# Their support lists (onnxruntime/tools/mobile_helpers/*.md, which ONNX Runtime's usability checker
# reads) lack, of what LOWERING writes: HardSigmoid (NNAPI, Core ML NeuralNetwork; ONNX Runtime inlines
# HardSwish as HardSigmoid·x), Flatten (Core ML MLProgram), Sum (all three), and Shape (NNAPI: a
# symbolic batch's resize; a fixed batch needs none). Each is replaced by ops all three take, computing
# the IR's own formula in float32; in an int8 model they lie between a layer's dequantisation and its
# quantisation as the op they replace did. Not replaced: GELU's Erf (NNAPI, Core ML NeuralNetwork; no
# exact form in their ops), BatchNormalization (Core ML MLProgram; only with --passes none, and ONNX
# Runtime folds one after a convolution itself).


def _hard_sigmoid_gate(e: _Emitter, x: str, out: str, name: str) -> str:
    """relu6(x + 3)/6 as the IR writes it: Add, Clip, Div."""
    shifted = e.node("Add", [x, e.constant("hsigmoid.shift", 3.0)], f"{out}.shifted", f"{name}.shift")
    clipped = _relu6(e, shifted, f"{out}.clipped", f"{name}.clip")
    return e.node("Div", [clipped, e.constant("hsigmoid.six", 6.0)], out, name)


def _hard_swish(e: _Emitter, x: str, out: str, name: str) -> str:
    """x·relu6(x + 3)/6: x times the gate above."""
    return e.node("Mul", [x, _hard_sigmoid_gate(e, x, f"{out}.gate", f"{name}.gate")], out, name)


def _flatten_as_reshape(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    # 0 keeps the input's batch (fixed or symbolic); the rest is the IR's per-sample shape.
    shape = e.int64(f"{name}.shape", [0, *node.shape])
    return e.node("Reshape", [xs[0], shape], e.name(name), name)


def _add_in_pairs(e: _Emitter, name: str, node: Node, xs: list[str]) -> str:
    """A sum of several tensors as a chain of Adds, left to right (the IR's add sums them in that order)."""
    total = xs[0]
    for i, x in enumerate(xs[1:-1], 1):
        total = e.node("Add", [total, x], f"{name}.partial{i}", f"{name}.add{i}")
    return e.node("Add", [total, xs[-1]], e.name(name), name)


MOBILE_LOWERING = Lowering(
    "onnx",
    {**OPS, "add": _add_in_pairs, "flatten": _flatten_as_reshape},
    {**ACTIVATIONS, "hsigmoid": _hard_sigmoid_gate, "hswish": _hard_swish},
    around=_quantised,
)
MOBILE_OPS = "HardSigmoid/HardSwish as Add, Clip, Div (and Mul); Flatten as Reshape; Sum as Adds"


def expected_initializers(graph: Graph) -> dict[str, np.ndarray]:
    """What every initialiser must hold, from the IR: float32 parameters; for quantised nodes their
    int8 weights, int32 biases and per-channel scales, and each tensor's uint8 scale and zero point."""
    expected = {}
    for name in graph.topo():
        node = graph.node(name)
        q = node.qparams
        for key, value in node.params.items():
            t = getattr(q, key, None) if q is not None and key in ("weight", "bias") else None
            if t is None:
                stored = channels(value, len(node.shape) + 1) if node.op == "affine" else value  # see _affine
                expected[f"{name}.{key}"] = stored.astype(np.float32)
            else:
                expected[f"{name}.{key}_q"] = t.q
                expected[f"{name}.{key}_scale"] = np.asarray(t.scale, dtype=np.float32)
                expected[f"{name}.{key}_zero_point"] = np.zeros(len(t.scale), dtype=t.q.dtype)
        if q is not None:
            expected[f"{name}.out_scale"] = np.asarray(q.output.scale, dtype=np.float32)
            expected[f"{name}.out_zero_point"] = np.asarray(q.output.zero_point, dtype=np.uint8)
    return expected


def batch_fields(options) -> dict:
    """The report's words for the batch and the operators of an ONNX or .ort model."""
    batch = options["batch"]
    return {
        "batch": DYNAMIC_BATCH if batch is None else batch,
        "ops": f"mobile: {MOBILE_OPS}" if options["mobile_ops"] else "default",
    }


class OnnxTarget(Target):
    name = "onnx"
    suffix = ".onnx"
    choices = {
        "image_input": Choice(default=False),
        "batch": Choice(default=DYNAMIC_BATCH),
        "mobile_ops": Choice(default=False),
    }

    def lowering(self) -> Lowering:
        return LOWERING

    def int8_plan(self, options) -> Int8Plan:
        return Int8Plan(WEIGHT_BITS, True, QUANTIZATION, depthwise_weight_bits=DEPTHWISE_WEIGHT_BITS)

    def write(self, graph: Graph, path: Path, record: ArtifactRecord, options) -> None:
        lowering = MOBILE_LOWERING if options["mobile_ops"] else LOWERING
        description = options.get("short_description", "")
        with open(path, "wb") as f:
            f.write(emit(graph, record.to_metadata(), description, lowering, options["batch"]))

    def make_options(self, values: dict, network) -> dict:
        return {
            "short_description": network.description.get("short_description", ""),
            "image_input": bool(values.get("image_input")),
            "batch": fixed_batch(values["batch"]),
            "mobile_ops": bool(values.get("mobile_ops")),
        }

    def record_fields(self, options) -> dict:
        # Only what differs from ONNX's own form is written: a default model's bytes stay as they were.
        return {
            "image_input": options["image_input"],
            "batch": options["batch"],
            "mobile_ops": True if options["mobile_ops"] else None,
        }

    def report_fields(self, options) -> dict:
        return {"image_input": options["image_input"], **batch_fields(options)}

    def read_metadata(self, path: Path) -> dict[str, str]:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises several types for corrupt input
            raise InputError(f"'{path}' is not a readable ONNX model ({type(exc).__name__})") from None
        if not model.graph.node:
            raise InputError(f"'{path}' is not a readable ONNX model (it has no graph)")
        return {p.key: p.value for p in model.metadata_props}

    def constants(self, path: Path) -> dict[str, np.ndarray]:
        model = onnx.load(str(path), load_external_data=False)
        return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def expected_constants(self, graph: Graph, record: ArtifactRecord) -> dict[str, np.ndarray]:
        return expected_initializers(graph)

    def executors(self) -> list[Executor]:
        return [Executor("ONNX Runtime (CPUExecutionProvider, all graph optimisations)", run_onnx)]

    def timer(self, path: Path, threads: int) -> Timer:
        return ort_timer(path, threads)

    def int8_checks(self, artifact: Path, quantized: Graph, feed: np.ndarray, output: np.ndarray) -> list[Check]:
        """Saturation excluded by a bound on the weights (a proof, not a sample: the verdict is the same
        on every host), and every layer compared with the fake-quant reference of that layer, fed ONNX
        Runtime's own uint8 tensors."""
        twin, names = instrumented(onnx.load(str(artifact)), quantized)
        layers = layers_check(quantized, names, run_onnx(twin.SerializeToString(), {INPUT_NAME: feed}), output)
        return [saturation_check(quantized), layers]


TARGET = OnnxTarget()
