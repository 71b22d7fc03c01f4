"""The flatbuffer side of the TFLite target: a subgraph's tensors, buffers, operators and operator
codes as the schema's object API (shipped in ai-edge-litert) holds them, the operator versions
TensorFlow's converter would set, and reading a saved model back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mnc.backends.tflite.options import TFLiteOptions
from mnc.ir.graph import Graph
from mnc.ir.node import Affine, Node

Op = schema.BuiltinOperator
Opt = schema.BuiltinOptions
Act = schema.ActivationFunctionType
T = schema.TensorType
BUFFER_ALIGNMENT = 16  # the schema's force_align for buffer data, which the Python packer ignores
# Operator versions as TensorFlow's converter sets them (tensorflow/lite/tools/versioning/op_version.cc):
# float ops are version 1; with int8 tensors, these. DEQUANTIZE is 3 for float16 weights, 2 for int8;
# MUL is 3 where in1_scale·in2_scale/out_scale ≥ 1; RESIZE_BILINEAR with half-pixel centres is 3 and a
# float dilated DEPTHWISE_CONV_2D 2, whatever the types; QUANTIZE (float → int8 or int8 → int8) is 1.
# An operator code takes the highest version of its uses.
INT8_VERSIONS = {
    Op.CONV_2D: 3,
    Op.DEPTHWISE_CONV_2D: 3,
    Op.FULLY_CONNECTED: 4,
    Op.ADD: 2,
    Op.MUL: 2,
    Op.MEAN: 2,
    Op.PAD: 2,
    Op.SOFTMAX: 2,
    Op.LOGISTIC: 2,
    Op.GELU: 2,
    Op.RELU: 2,
    Op.RELU6: 2,
    Op.DEQUANTIZE: 2,
    Op.CONCATENATION: 2,
    Op.AVERAGE_POOL_2D: 2,
}


def nhwc(shape: tuple[int, ...]) -> list[int]:
    """An IR per-sample shape (C, H, W) or (F,) as a batch-of-one TFLite shape."""
    return [1, shape[1], shape[2], shape[0]] if len(shape) == 3 else [1, *shape]


class _AlignedBuffer(schema.BufferT):
    """A buffer whose data starts on a BUFFER_ALIGNMENT boundary of the file."""

    def Pack(self, builder):  # noqa: N802 (the generated API's name)
        data = None
        if self.data is not None and len(self.data):
            payload = bytes(self.data)
            builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


@dataclass
class Writer:
    """Collects the tensors, buffers, operators and operator codes of one subgraph; the context the
    TFLite lowering writes into (`graph`: the IR it lowers, `values`: each lowered node's tensor)."""

    graph: Graph
    options: TFLiteOptions
    fp16: bool = False
    int8: bool = False
    tensors: list = field(default_factory=list)
    buffers: list = field(default_factory=lambda: [_AlignedBuffer()])  # buffer 0: the empty sentinel
    operators: list = field(default_factory=list)
    opcodes: dict = field(default_factory=dict)  # builtin → [index, version]
    values: dict = field(default_factory=dict)  # IR node → tensor index of its output
    output_labels: set = field(default_factory=set)  # the names given to the model's outputs so far

    def tensor(
        self, name: str, shape: list[int], dtype: int = T.FLOAT32, data: bytes | None = None, quantization=None
    ) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.quantization = name, list(shape), dtype, quantization
        if data is not None:
            buffer = _AlignedBuffer()
            buffer.data = data
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        elif shape and shape[0] == 1 and len(shape) > 1:
            t.shapeSignature = [-1, *shape[1:]]  # activations: any batch
        self.tensors.append(t)
        return len(self.tensors) - 1

    def activation(self, name: str, shape: list[int], q: Affine | None = None) -> int:
        """An activation tensor: int8 with its quantisation in an int8 model, else float32."""
        if self.int8 and q is not None:
            return self.tensor(name, shape, T.INT8, quantization=affine(q))
        return self.tensor(name, shape)

    def output(self, name: str, node: Node) -> int:
        return self.activation(name, nhwc(node.shape), node.qparams.output if node.qparams else None)

    def like(self, name: str, shape: list[int], x: int) -> int:
        """A tensor of the same type and quantisation as tensor x (what PAD and RESHAPE need)."""
        return self.tensor(name, shape, self.tensors[x].type, quantization=self.tensors[x].quantization)

    def weights(self, name: str, node: Node, layout, dim: int) -> int:
        """A conv/fc weight in TFLite's layout (`layout` maps the IR's array to it): int8 per channel
        along `dim` in an int8 model, else float (float16 behind DEQUANTIZE in an fp16 model)."""
        q = node.qparams.weight if node.qparams is not None and self.int8 else None
        if q is None:
            return self.constant(name, layout(node.params["weight"]), weight=True)
        ints = np.ascontiguousarray(layout(q.q), dtype=np.int8)
        return self.tensor(name, list(ints.shape), T.INT8, ints.tobytes(), per_channel(q.scale, dim))

    def bias(self, name: str, node: Node, channels: int, x: int) -> int:
        """A conv/fc bias (zeros where the layer has none): int32 at input·weight scale in an int8
        model, else float (float16 behind DEQUANTIZE in an fp16 model). x: the layer's input."""
        q = node.qparams.bias if node.qparams is not None and self.int8 else None
        weight = node.qparams.weight if node.qparams is not None and self.int8 else None
        if q is None and weight is not None:  # no bias: int32 zeros, as TFLite's int8 kernels take them
            scale = np.float64(self.tensors[x].quantization.scale[0]) * np.asarray(weight.scale, np.float64)
            zeros = np.zeros(channels, np.int32)
            return self.tensor(name, [channels], T.INT32, zeros.tobytes(), per_channel(scale, 0))
        if q is None:
            bias = node.params["bias"] if node.attrs["bias"] else np.zeros(channels, np.float32)
            return self.constant(name, bias, weight=True)
        ints = np.ascontiguousarray(q.q, dtype=np.int32)
        return self.tensor(name, [channels], T.INT32, ints.tobytes(), per_channel(q.scale, 0))

    def scalar(self, name: str, value: float, int8: bool) -> int:
        if not int8:
            return self.constant(name, np.float32(value))
        return self.tensor(name, [], T.INT8, np.int8(127).tobytes(), affine(Affine(value / 127.0, 128)))

    def constant(self, name: str, array: np.ndarray, weight: bool = False) -> int:
        """A float32 constant; a weight in an fp16 model is float16 in the file, widened by DEQUANTIZE."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not (self.fp16 and weight):
            return self.tensor(name, list(array.shape), T.FLOAT32, array.tobytes())
        half = self.tensor(f"{name}.fp16", list(array.shape), T.FLOAT16, array.astype(np.float16).tobytes())
        widened = self.tensor(name, list(array.shape))
        self.op(Op.DEQUANTIZE, [half], [widened])
        return widened

    def int32(self, name: str, values) -> int:
        array = np.asarray(values, dtype=np.int32)
        return self.tensor(name, list(array.shape), T.INT32, array.tobytes())

    def op(
        self, builtin: int, inputs: list[int], outputs: list[int], options_type: int = Opt.NONE, options=None
    ) -> int:
        version = self._version(builtin, inputs, outputs, options)
        code = self.opcodes.setdefault(builtin, [len(self.opcodes), version])
        code[1] = max(code[1], version)
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code[0], list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)
        return outputs[0]

    def _version(self, builtin: int, inputs: list[int], outputs: list[int], options=None) -> int:
        first = self.tensors[inputs[0]]
        if builtin == Op.DEQUANTIZE:
            return 3 if first.type == T.FLOAT16 else 2
        if builtin == Op.RESIZE_BILINEAR and options.halfPixelCenters:
            return 3
        if first.type != T.INT8:
            dilated = builtin == Op.DEPTHWISE_CONV_2D and (options.dilationHFactor, options.dilationWFactor) != (1, 1)
            return 2 if dilated else 1
        if builtin == Op.MUL:
            scale = lambda i: np.float32(self.tensors[i].quantization.scale[0])  # noqa: E731
            return 3 if scale(inputs[0]) * scale(inputs[1]) / scale(outputs[0]) >= 1.0 else 2
        return INT8_VERSIONS.get(builtin, 1)

    def codes(self) -> list:
        result = []
        for builtin, (_, version) in sorted(self.opcodes.items(), key=lambda kv: kv[1][0]):
            c = schema.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), version
            result.append(c)
        return result


def affine(q: Affine) -> schema.QuantizationParametersT:
    """mnc's uint8 grid as TFLite's int8 one: the same scale, the zero point 128 lower."""
    return make(schema.QuantizationParametersT, scale=[float(q.scale)], zeroPoint=[int(q.zero_point) - 128])


def per_channel(scale: np.ndarray, dim: int) -> schema.QuantizationParametersT:
    return make(
        schema.QuantizationParametersT,
        scale=[float(s) for s in scale],
        zeroPoint=[0] * len(scale),
        quantizedDimension=dim,
    )


def make(cls, **values):
    o = cls()
    for key, value in values.items():
        setattr(o, key, value)
    return o


def buffer(data: bytes) -> _AlignedBuffer:
    b = _AlignedBuffer()
    b.data = data
    return b


NUMPY_TYPES = {T.FLOAT32: np.float32, T.FLOAT16: np.float16, T.INT32: np.int32, T.INT8: np.int8, T.UINT8: np.uint8}


def text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else np.asarray(value, np.uint8).tobytes().decode("utf-8")


def read_model(path: Path) -> schema.ModelT:
    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("no TFL3 file identifier")
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
