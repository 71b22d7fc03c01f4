"""The TFLite target: IR → a LiteRT flatbuffer, built with the schema's object API that ships in
ai-edge-litert, and run by the LiteRT interpreter.

NHWC throughout, as TFLite's kernels want it: the input is [N, H, W, C], convolution weights are
OHWI (depthwise 1HWO), and the file holds no TRANSPOSE. Explicit pads become TFLite's SAME where
they are SAME's, VALID where there are none, else a PAD then VALID (PyTorch's symmetric padding at
stride 2 on even sizes), judged on a dilated kernel's extent (k − 1)·d + 1. Per-anchor rows are a
RESHAPE of the NHWC map ([N, H, W, A·K] → [N, H·W·A, K] is the IR's order already); concatenation
is along channels (axis 3) or rows (axis 1). Executors take and give the reference's NCHW layout;
they transpose 4-D tensors at the edges, outside the model, and return every output in the graph's
order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mnc.artifact import ArtifactRecord
from mnc.backends.target import (
    INPUT_NAME,
    Check,
    Choice,
    Executor,
    Int8Plan,
    NetworkFacts,
    Target,
    Timer,
    dequantized,
    layer_by_layer,
    output_names,
    read_labels,
    timing_input,
)
from mnc.errors import InputError
from mnc.ir.graph import Graph
from mnc.ir.node import Affine, Node
from mnc.ir.ops import dilation
from mnc.parallel import child_environment

Op = schema.BuiltinOperator
Opt = schema.BuiltinOptions
Act = schema.ActivationFunctionType
T = schema.TensorType
SIGNATURE = "serving_default"
BUFFER_ALIGNMENT = 16  # the schema's force_align for buffer data, which the Python packer ignores
PRECISIONS = ("fp32", "fp16")
FUSED = {"relu": Act.RELU, "relu6": Act.RELU6}  # activations a conv/fc/add can carry
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
    Op.RELU: 2,
    Op.RELU6: 2,
    Op.DEQUANTIZE: 2,
    Op.CONCATENATION: 2,
    Op.AVERAGE_POOL_2D: 2,
}
# TFLite's integer kernels requantize with fixed-point multipliers and, for hard swish, logistic and
# softmax, fixed-point approximations; the fake-quant reference rounds the exact real result once.
# Fed the same int8 inputs, each layer may then differ by one rounding step (measured: ≤ 1 LSB on
# every layer of V1, V2, V3 and MnasNet with seeded weights, and of the trained digits network).
LAYER_LSB_BOUND = 1.0
INT8_SCHEME = (
    "TFLite full-integer: int8 activations (per-tensor, asymmetric), int8 weights (per-output-channel "
    "symmetric, [-127, 127]), int32 bias at input·weight scale; float input and output through "
    "QUANTIZE/DEQUANTIZE"
)


@dataclass(frozen=True)
class TFLiteOptions:
    precision: str = "fp32"
    image_input: bool = False
    labels: tuple[str, ...] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    description: str = ""


def _nhwc(shape: tuple[int, ...]) -> list[int]:
    """An IR per-sample shape (C, H, W) or (F,) as a batch-of-one TFLite shape."""
    return [1, shape[1], shape[2], shape[0]] if len(shape) == 3 else [1, *shape]


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one axis: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


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
class _Writer:
    """Collects the tensors, buffers, operators and operator codes of one subgraph."""

    fp16: bool = False
    int8: bool = False
    tensors: list = field(default_factory=list)
    buffers: list = field(default_factory=lambda: [_AlignedBuffer()])  # buffer 0: the empty sentinel
    operators: list = field(default_factory=list)
    opcodes: dict = field(default_factory=dict)  # builtin → [index, version]
    names: dict = field(default_factory=dict)  # IR node → tensor index of its output
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
            return self.tensor(name, shape, T.INT8, quantization=_affine(q))
        return self.tensor(name, shape)

    def output(self, name: str, node: Node) -> int:
        return self.activation(name, _nhwc(node.shape), node.qparams.output if node.qparams else None)

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
        return self.tensor(name, list(ints.shape), T.INT8, ints.tobytes(), _per_channel(q.scale, dim))

    def bias(self, name: str, node: Node, channels: int, x: int) -> int:
        """A conv/fc bias (zeros where the layer has none): int32 at input·weight scale in an int8
        model, else float (float16 behind DEQUANTIZE in an fp16 model). x: the layer's input."""
        q = node.qparams.bias if node.qparams is not None and self.int8 else None
        weight = node.qparams.weight if node.qparams is not None and self.int8 else None
        if q is None and weight is not None:  # no bias: int32 zeros, as TFLite's int8 kernels take them
            scale = np.float64(self.tensors[x].quantization.scale[0]) * np.asarray(weight.scale, np.float64)
            zeros = np.zeros(channels, np.int32)
            return self.tensor(name, [channels], T.INT32, zeros.tobytes(), _per_channel(scale, 0))
        if q is None:
            bias = node.params["bias"] if node.attrs["bias"] else np.zeros(channels, np.float32)
            return self.constant(name, bias, weight=True)
        ints = np.ascontiguousarray(q.q, dtype=np.int32)
        return self.tensor(name, [channels], T.INT32, ints.tobytes(), _per_channel(q.scale, 0))

    def scalar(self, name: str, value: float, int8: bool) -> int:
        if not int8:
            return self.constant(name, np.float32(value))
        return self.tensor(name, [], T.INT8, np.int8(127).tobytes(), _affine(Affine(value / 127.0, 128)))

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


def _affine(q: Affine) -> schema.QuantizationParametersT:
    """mnc's uint8 grid as TFLite's int8 one: the same scale, the zero point 128 lower."""
    return _options(schema.QuantizationParametersT, scale=[float(q.scale)], zeroPoint=[int(q.zero_point) - 128])


def _per_channel(scale: np.ndarray, dim: int) -> schema.QuantizationParametersT:
    return _options(
        schema.QuantizationParametersT,
        scale=[float(s) for s in scale],
        zeroPoint=[0] * len(scale),
        quantizedDimension=dim,
    )


def _options(cls, **values):
    o = cls()
    for key, value in values.items():
        setattr(o, key, value)
    return o


def _unsupported(what: str, name: str, node: Node) -> InputError:
    return InputError(f"--target tflite cannot express {what} (layer '{name}')", node.src)


# ---- activations ------------------------------------------------------------------------------


def _hsigmoid(w: _Writer, x: int, out: int, name: str) -> int:
    """relu6(x + 3)/6: ADD with a fused RELU6, then MUL, as TensorFlow's converter lowers it."""
    int8 = w.tensors[x].type == T.INT8
    # In an int8 model relu6(x + 3) is held on the fixed grid of [0, 6].
    shifted = w.activation(f"{name}.plus3", w.tensors[x].shape, Affine(6.0 / 255.0, 0) if int8 else None)
    w.op(
        Op.ADD,
        [x, w.scalar(f"{name}.three", 3.0, int8)],
        [shifted],
        Opt.AddOptions,
        _options(schema.AddOptionsT, fusedActivationFunction=Act.RELU6),
    )
    return w.op(
        Op.MUL,
        [shifted, w.scalar(f"{name}.sixth", 1.0 / 6.0, int8)],
        [out],
        Opt.MulOptions,
        _options(schema.MulOptionsT),
    )


ACTIVATIONS = {
    "relu": lambda w, x, out, name: w.op(Op.RELU, [x], [out]),
    "relu6": lambda w, x, out, name: w.op(Op.RELU6, [x], [out]),
    "sigmoid": lambda w, x, out, name: w.op(Op.LOGISTIC, [x], [out]),
    "hswish": lambda w, x, out, name: w.op(Op.HARD_SWISH, [x], [out]),
    "hsigmoid": _hsigmoid,
    "identity": lambda w, x, out, name: w.op(
        Op.RESHAPE,
        [x, w.int32(f"{name}.shape", [-1, *w.tensors[x].shape[1:]])],
        [out],
        Opt.ReshapeOptions,
        _options(schema.ReshapeOptionsT),
    ),
}


def _with_activation(w: _Writer, name: str, node: Node, emit) -> None:
    """Emit an op whose activation is fused where TFLite can fuse it, else a separate op after it."""
    fn = node.attrs.get("fused_act")
    out = w.output(name, node)
    if fn is None or fn in FUSED:
        emit(out, FUSED.get(fn, Act.NONE))
    else:  # an int8 graph has none of these: the target fuses only what TFLite can (FUSED)
        pre = w.tensor(f"{name}.preact", _nhwc(node.shape))
        emit(pre, Act.NONE)
        ACTIVATIONS[fn](w, pre, out, f"{name}.act")
    w.names[name] = out


# ---- ops ----------------------------------------------------------------------------------------


def _conv(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    a, p = node.attrs, node.params
    c_in, h, wd = graph.input_shapes(name)[0]
    (kh, kw), (sh, sw), (top, left, bottom, right) = a["kernel"], a["stride"], a["pads"]
    dh, dw = dilation(a)
    x = xs[0]
    # TFLite pads a dilated kernel for its extent (k − 1)·d + 1 (ComputePaddingHeightWidth).
    if (top, bottom) == same_pads(h, (kh - 1) * dh + 1, sh) and (left, right) == same_pads(wd, (kw - 1) * dw + 1, sw):
        padding = schema.Padding.SAME
    else:
        padding = schema.Padding.VALID
        if any(a["pads"]):
            padded = w.like(f"{name}.pad", [1, h + top + bottom, wd + left + right, c_in], x)
            paddings = w.int32(f"{name}.paddings", [[0, 0], [top, bottom], [left, right], [0, 0]])
            x = w.op(Op.PAD, [x, paddings], [padded], Opt.PadOptions, _options(schema.PadOptionsT))
    out_channels = p["weight"].shape[0]
    b = w.bias(f"{name}.bias", node, out_channels, x)
    groups = a["groups"]
    if groups == 1:
        filt = w.weights(f"{name}.weight", node, *weight_layout(graph, name))
        options = _options(
            schema.Conv2DOptionsT, padding=padding, strideH=sh, strideW=sw, dilationHFactor=dh, dilationWFactor=dw
        )
        builtin, options_type = Op.CONV_2D, Opt.Conv2DOptions
    elif groups == c_in:  # depthwise, with out_channels / c_in filters per input channel
        filt = w.weights(f"{name}.weight", node, *weight_layout(graph, name))
        options = _options(
            schema.DepthwiseConv2DOptionsT,
            padding=padding,
            strideH=sh,
            strideW=sw,
            depthMultiplier=out_channels // c_in,
            dilationHFactor=dh,
            dilationWFactor=dw,
        )
        builtin, options_type = Op.DEPTHWISE_CONV_2D, Opt.DepthwiseConv2DOptions
    else:
        raise _unsupported(f"a grouped convolution ({groups} groups of {c_in} channels)", name, node)

    def emit(out: int, act: int) -> None:
        options.fusedActivationFunction = act
        w.op(builtin, [x, filt, b], [out], options_type, options)

    _with_activation(w, name, node, emit)


def weight_layout(graph: Graph, name: str):
    """(IR weight → TFLite's layout, the axis of its output channels) for a conv or fc node."""
    node = graph.node(name)
    if node.op == "fc":
        (producer,) = graph.inputs_of(name)
        source = graph.input_shapes(producer)[0] if graph.node(producer).op == "flatten" else None
        if source is not None and len(source) == 3 and source[1] * source[2] > 1:
            # The flattened map was C×H×W in the IR and is H×W×C here: reorder the weight's columns.
            c, h, wd = source
            return (lambda a: a.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(a.shape[0], -1)), 0
        return (lambda a: a), 0
    if node.attrs["groups"] == 1:
        return (lambda a: a.transpose(0, 2, 3, 1)), 0  # OIHW → OHWI
    return (lambda a: a[:, 0].transpose(1, 2, 0)[None]), 3  # depthwise: O1HW → 1HWO


def _fc(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    out_features = node.params["weight"].shape[0]
    filt = w.weights(f"{name}.weight", node, *weight_layout(graph, name))
    b = w.bias(f"{name}.bias", node, out_features, xs[0])

    def emit(out: int, act: int) -> None:
        w.op(
            Op.FULLY_CONNECTED,
            [xs[0], filt, b],
            [out],
            Opt.FullyConnectedOptions,
            _options(schema.FullyConnectedOptionsT, fusedActivationFunction=act),
        )

    _with_activation(w, name, node, emit)


def _batchnorm(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    if w.int8:
        raise _unsupported("an unfolded batch norm in an int8 model (the default passes fold it)", name, node)
    p = {k: v.astype(np.float64) for k, v in node.params.items()}
    scale = p["gamma"] / np.sqrt(p["var"] + node.attrs["eps"])
    scaled = w.tensor(f"{name}.scaled", _nhwc(node.shape))
    w.op(Op.MUL, [xs[0], w.constant(f"{name}.scale", scale)], [scaled], Opt.MulOptions, _options(schema.MulOptionsT))
    out = w.tensor(name, _nhwc(node.shape))
    w.names[name] = w.op(
        Op.ADD,
        [scaled, w.constant(f"{name}.shift", p["beta"] - p["mean"] * scale)],
        [out],
        Opt.AddOptions,
        _options(schema.AddOptionsT),
    )


def _act(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    out = w.output(name, node)
    w.names[name] = ACTIVATIONS[node.attrs["fn"]](w, xs[0], out, name)


def _add(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    total = xs[0]
    for i, other in enumerate(xs[1:]):
        last = i == len(xs) - 2
        if not last and w.int8:
            raise _unsupported("a sum of more than two tensors in an int8 model", name, node)
        out = w.output(name, node) if last else w.tensor(f"{name}.{i}", _nhwc(node.shape))
        total = w.op(Op.ADD, [total, other], [out], Opt.AddOptions, _options(schema.AddOptionsT))
    w.names[name] = total


def _simple(builtin: int, options_type: int = Opt.NONE, options=None, extra=None):
    def lower(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
        inputs = xs + (extra(w, graph, name, node) if extra else [])
        out = w.output(name, node)
        w.names[name] = w.op(builtin, inputs, [out], options_type, options() if options else None)

    return lower


def _avgpool(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    options = _options(
        schema.Pool2DOptionsT,
        padding=schema.Padding.VALID,
        strideH=sh,
        strideW=sw,
        filterHeight=kh,
        filterWidth=kw,
        fusedActivationFunction=Act.NONE,
    )
    w.names[name] = w.op(Op.AVERAGE_POOL_2D, xs, [w.output(name, node)], Opt.Pool2DOptions, options)


def _resize(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    """Bilinear with half-pixel centres: TensorFlow's half_pixel_centers, PyTorch's align_corners=False."""
    size = w.int32(f"{name}.size", list(node.attrs["size"]))
    options = _options(schema.ResizeBilinearOptionsT, alignCorners=False, halfPixelCenters=True)
    w.names[name] = w.op(Op.RESIZE_BILINEAR, [xs[0], size], [w.output(name, node)], Opt.ResizeBilinearOptions, options)


def _concat(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    """Along the IR's first per-sample axis: channels (axis 3 of NHWC maps) or rows (axis 1). TFLite's
    int8 kernel copies bytes and requires every input on the output's grid: an input on another grid
    is first requantised to it (QUANTIZE int8 → int8), which is what the reference computes, the
    joined values rounded to the output's grid."""
    out = w.output(name, node)
    if w.int8:
        grid = _grid(w.tensors[out])
        xs = [
            x
            if _grid(w.tensors[x]) == grid
            else w.op(
                Op.QUANTIZE,
                [x],
                [w.like(f"{name}.input{i}", w.tensors[x].shape, out)],
                Opt.QuantizeOptions,
                _options(schema.QuantizeOptionsT),
            )
            for i, x in enumerate(xs)
        ]
    options = _options(
        schema.ConcatenationOptionsT, axis=3 if len(node.shape) == 3 else 1, fusedActivationFunction=Act.NONE
    )
    w.names[name] = w.op(Op.CONCATENATION, xs, [out], Opt.ConcatenationOptions, options)


def resize_positions(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel samples the input along one axis: exactly (half-pixel centres), and
    as TFLite's integer kernel does (ResizeBilinearInteger: the scale rounded to 1/1024 of a pixel,
    positions in 1/1024 units), both clamped to the input as both kernels clamp them."""
    i = np.arange(size_out)
    exact = (i + 0.5) * size_in / size_out - 0.5
    scale_10 = (1024 * size_in + size_out // 2) // size_out
    fixed = (i * scale_10 + scale_10 // 2 - 512) / 1024
    return np.clip(exact, 0, size_in - 1), np.clip(fixed, 0, size_in - 1)


def resize_allowance(x: np.ndarray, size) -> np.ndarray:
    """How far TFLite's int8 bilinear resize may be from the exact one, per output element, in the
    input's units: bilinear interpolation moves by at most |Δposition| × the largest step between
    neighbouring input pixels it spans, along each axis (TFLite samples at fixed-point positions
    that differ from the exact ones unless 1024·in/out is an even integer)."""
    n, c, h, w = x.shape
    (ey, ry), (ex, rx) = _spans(h, size[0]), _spans(w, size[1])
    # The input rows and columns either position reads (for the step across the other axis).
    read_rows = np.unique(
        np.concatenate(
            [np.minimum(np.floor(p).astype(int) + k, h - 1) for p in resize_positions(h, size[0]) for k in (0, 1)]
        ).reshape(-1, size[0]),
        axis=0,
    )
    read_cols = np.unique(
        np.concatenate(
            [np.minimum(np.floor(p).astype(int) + k, w - 1) for p in resize_positions(w, size[1]) for k in (0, 1)]
        ).reshape(-1, size[1]),
        axis=0,
    )
    out = np.empty((n, c, *size), np.float32)
    for s in range(n):  # one sample at a time: a 520² map of 21 classes is 23 MB in float32
        sample = np.asarray(x[s], np.float32)
        dy = np.abs(np.diff(sample, axis=1)) if h > 1 else np.zeros((c, 1, w), np.float32)
        dx = np.abs(np.diff(sample, axis=2)) if w > 1 else np.zeros((c, h, 1), np.float32)
        slope_y = np.zeros((c, *size), np.float32)
        for rows in ry:  # steps between input rows r and r + 1, for each r either position spans
            for cols in read_cols:
                slope_y = np.maximum(slope_y, dy[:, rows][:, :, cols])
        slope_x = np.zeros((c, *size), np.float32)
        for cols in rx:
            for rows in read_rows:
                slope_x = np.maximum(slope_x, dx[:, rows][:, :, cols])
        out[s] = ey[:, None] * slope_y + ex[None, :] * slope_x
    return out


def _spans(size_in: int, size_out: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Along one axis: |exact − TFLite position| per output, and the neighbour steps (r → r + 1,
    as indices r into the input's differences) that the interval between them crosses."""
    exact, fixed = resize_positions(size_in, size_out)
    last = max(size_in - 2, 0)  # the last step index
    lo = np.clip(np.floor(np.minimum(exact, fixed)).astype(int), 0, last)
    hi = np.maximum(np.clip(np.ceil(np.maximum(exact, fixed)).astype(int) - 1, 0, last), lo)
    return np.abs(exact - fixed), [np.minimum(lo + k, hi) for k in range(int((hi - lo).max()) + 1)]


def _grid(t) -> tuple[float, int]:
    """An int8 tensor's (scale, zero point) as the runtime compares them (the scale a float32)."""
    return float(np.float32(t.quantization.scale[0])), int(t.quantization.zeroPoint[0])


def _per_anchor(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    """(A·K, H, W) → (H·W·A, K): on NHWC data, position-major and anchor-minor already, a RESHAPE."""
    rows, columns = node.shape
    shape = w.int32(f"{name}.shape", [-1, rows, columns])
    w.names[name] = w.op(
        Op.RESHAPE, [xs[0], shape], [w.output(name, node)], Opt.ReshapeOptions, _options(schema.ReshapeOptionsT)
    )


OPS = {
    "conv": _conv,
    "fc": _fc,
    "batchnorm": _batchnorm,
    "act": _act,
    "add": _add,
    "mul": _simple(Op.MUL, Opt.MulOptions, lambda: _options(schema.MulOptionsT)),
    "global_avgpool": _simple(
        Op.MEAN,
        Opt.ReducerOptions,
        lambda: _options(schema.ReducerOptionsT, keepDims=True),
        lambda w, g, n, node: [w.int32(f"{n}.axes", [1, 2])],
    ),
    "flatten": _simple(
        Op.RESHAPE,
        Opt.ReshapeOptions,
        lambda: _options(schema.ReshapeOptionsT),
        lambda w, g, n, node: [w.int32(f"{n}.shape", [-1, int(np.prod(node.shape))])],
    ),
    "softmax": _simple(Op.SOFTMAX, Opt.SoftmaxOptions, lambda: _options(schema.SoftmaxOptionsT, beta=1.0)),
    "avgpool": _avgpool,
    "resize": _resize,
    "concat": _concat,
    "per_anchor": _per_anchor,
}


# ---- the model ----------------------------------------------------------------------------------


def _input(w: _Writer, graph: Graph, options: TFLiteOptions) -> int:
    """The model's input, normalised (image input) and quantised (int8) as the first node expects it."""
    (name,) = graph.inputs
    node = graph.node(name)
    x = _float_input(w, _nhwc(node.shape), options)
    if not w.int8:
        return x
    return w.op(
        Op.QUANTIZE, [x], [w.output(f"{INPUT_NAME}.int8", node)], Opt.QuantizeOptions, _options(schema.QuantizeOptionsT)
    )


def _float_input(w: _Writer, shape: list[int], options: TFLiteOptions) -> int:
    if not options.image_input:
        return w.tensor(INPUT_NAME, shape)
    # 8-bit pixels; the spec's per-channel normalisation (p/255 − mean)/std happens inside the model.
    pixels = w.tensor(INPUT_NAME, shape, T.UINT8)
    floats = w.op(
        Op.CAST,
        [pixels],
        [w.tensor(f"{INPUT_NAME}.float", shape)],
        Opt.CastOptions,
        _options(schema.CastOptionsT, inDataType=T.UINT8, outDataType=T.FLOAT32),
    )
    std, mean = np.asarray(options.std, np.float64), np.asarray(options.mean, np.float64)
    scaled = w.op(
        Op.MUL,
        [floats, w.constant(f"{INPUT_NAME}.inv_std", 1.0 / (255.0 * std))],
        [w.tensor(f"{INPUT_NAME}.scaled", shape)],
        Opt.MulOptions,
        _options(schema.MulOptionsT),
    )
    return w.op(
        Op.ADD,
        [scaled, w.constant(f"{INPUT_NAME}.shift", -mean / std)],
        [w.tensor(f"{INPUT_NAME}.normalised", shape)],
        Opt.AddOptions,
        _options(schema.AddOptionsT),
    )


def build_model(graph: Graph, metadata: dict[str, str], options: TFLiteOptions) -> bytes:
    (input_node,) = graph.inputs
    w = _Writer(fp16=options.precision == "fp16", int8=graph.node(input_node).qparams is not None)
    graph_input = _input(w, graph, options)
    w.names[input_node] = graph_input
    for name in graph.topo():
        node = graph.node(name)
        if node.op != "input":
            OPS[node.op](w, graph, name, node, [w.names[p] for p in graph.inputs_of(name)])
    labels = output_names(graph)
    outputs = [_output(w, w.names[node], label, graph_input) for node, label in zip(graph.outputs, labels)]
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.name = w.tensors, w.operators, "main"
    subgraph.inputs, subgraph.outputs = [0], outputs

    model = schema.ModelT()
    model.version, model.description = 3, options.description or "mnc"
    model.operatorCodes, model.subgraphs = w.codes(), [subgraph]
    entries = dict(metadata)
    if options.labels:
        entries["labels"] = "\n".join(options.labels) + "\n"
    model.metadata = []
    for key, value in entries.items():
        w.buffers.append(_buffer(value.encode("utf-8")))
        model.metadata.append(_options(schema.MetadataT, name=key, buffer=len(w.buffers) - 1))
    model.buffers = w.buffers
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE, 0
    signature.inputs = [_options(schema.TensorMapT, name=INPUT_NAME, tensorIndex=0)]
    signature.outputs = [
        _options(schema.TensorMapT, name=label, tensorIndex=index) for label, index in zip(labels, outputs)
    ]
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _output(w: _Writer, x: int, label: str, graph_input: int) -> int:
    """A network output named `label`, float: the int8 tensor dequantised, else the node's own tensor
    renamed, or a copy of it where it is already an output or the input (one tensor, one name)."""
    if w.int8:
        return w.op(
            Op.DEQUANTIZE,
            [x],
            [w.tensor(label, w.tensors[x].shape)],
            Opt.DequantizeOptions,
            _options(schema.DequantizeOptionsT),
        )
    if x in (0, graph_input) or w.tensors[x].name in w.output_labels:
        shape = w.tensors[x].shape
        x = w.op(
            Op.RESHAPE,
            [x, w.int32(f"{label}.shape", [-1, *shape[1:]])],
            [w.tensor(label, shape)],
            Opt.ReshapeOptions,
            _options(schema.ReshapeOptionsT),
        )
    w.tensors[x].name = label
    w.output_labels.add(label)
    return x


def _buffer(data: bytes) -> _AlignedBuffer:
    b = _AlignedBuffer()
    b.data = data
    return b


_NUMPY_TYPES = {T.FLOAT32: np.float32, T.FLOAT16: np.float16, T.INT32: np.int32, T.INT8: np.int8, T.UINT8: np.uint8}


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else np.asarray(value, np.uint8).tobytes().decode("utf-8")


def read_model(path: Path) -> schema.ModelT:
    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("no TFL3 file identifier")
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))


# ---- running -------------------------------------------------------------------------------------


def run_litert(artifact, feeds: dict[str, np.ndarray], *, reference_kernels: bool = False) -> list[np.ndarray]:
    """Run a .tflite in the LiteRT interpreter on a batch given in the reference's NCHW layout."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
    ((_, batch),) = feeds.items()
    x = np.transpose(batch, (0, 2, 3, 1)) if batch.ndim == 4 else batch
    with _quiet_native_stderr():  # LiteRT logs "INFO: Created TensorFlow Lite XNNPACK delegate" from C++
        interpreter = Interpreter(model_path=str(artifact), num_threads=1, experimental_op_resolver_type=resolver)
        (inp,) = interpreter.get_input_details()
        outputs = interpreter.get_output_details()  # in the subgraph's order: the graph's outputs'
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
    interpreter.invoke()
    ys = [interpreter.get_tensor(out["index"]) for out in outputs]
    # Feature maps back to NCHW; vectors [N, F] and per-anchor rows [N, rows, K] are the IR's layout.
    return [np.transpose(y, (0, 3, 1, 2)) if y.ndim == 4 else y for y in ys]


@contextlib.contextmanager
def _quiet_native_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _int8_tensors(artifact, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Every int8 activation of the model on a batch (NCHW), with the reference kernels, keyed
    'name|scale|zero point'."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = np.transpose(batch, (0, 2, 3, 1))
    with _quiet_native_stderr():
        interpreter = Interpreter(
            model_path=str(artifact),
            num_threads=1,
            experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
        )
        (inp,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
    interpreter.invoke()
    found = {}
    for t in interpreter.get_tensor_details():
        scale, zero_point = t["quantization"]
        if t["dtype"] == np.int8 and scale > 0 and len(t["shape"]) > 1 and t["shape"][0] == len(x):
            found[f"{t['name']}|{float(scale)!r}|{int(zero_point)}"] = interpreter.get_tensor(t["index"]).copy()
    return found


def _quantization(key: str) -> tuple[float, int]:
    _, scale, zero_point = key.rsplit("|", 2)
    return float(scale), int(zero_point)


def _child_main(mode: str, artifact: str, folder: str) -> None:
    batch = np.load(Path(folder) / "input.npy", allow_pickle=False)
    if mode == "run":
        outputs = run_litert(artifact, {INPUT_NAME: batch}, reference_kernels=True)
        np.savez(Path(folder) / "output.npz", **{f"output{i}": y for i, y in enumerate(outputs)})
    else:
        np.savez(Path(folder) / "output.npz", **_int8_tensors(artifact, batch))


def _in_child(mode: str, artifact, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Run LiteRT's reference kernels in a separate Python process (`python -m mnc.backends.tflite`):
    on some graphs they abort the process instead of returning an error, and an abort must be a
    failed verification, not a crash of mnc. A plain child process, not multiprocessing, so that
    library users need no `if __name__ == "__main__"` guard."""
    with tempfile.TemporaryDirectory(prefix="mnc-litert-") as tmp:
        np.save(Path(tmp) / "input.npy", batch)
        done = subprocess.run(
            [sys.executable, "-m", "mnc.backends.tflite", mode, str(artifact), tmp],
            capture_output=True,
            text=True,
            preexec_fn=_ignore_interrupts,
            env=child_environment(),
        )
        if done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise RuntimeError(f"LiteRT's reference kernels failed in their process ({why[0]})")
        with np.load(Path(tmp) / "output.npz", allow_pickle=False) as out:
            return {k: out[k] for k in out.files}


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def run_litert_reference(artifact, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a .tflite with LiteRT's reference kernels, in a child process."""
    ((_, batch),) = feeds.items()
    found = _in_child("run", artifact, batch)
    return [found[f"output{i}"] for i in range(len(found))]


class TFLiteTarget(Target):
    name = "tflite"
    suffix = ".tflite"
    choices = {
        "precision": Choice(PRECISIONS, "fp32"),
        "image_input": Choice(default=False),
        "labels": Choice(),
    }
    ops = OPS
    activations = ACTIVATIONS
    fused_activations = tuple(FUSED)  # the others keep a tensor of their own: int8 needs its range

    def layout(self, shape: tuple[int, ...]) -> list[int]:
        return _nhwc(shape)[1:]

    def make_options(self, values: dict, network: NetworkFacts) -> TFLiteOptions:
        labels = read_labels(values["labels"], network.classes) if values["labels"] else None
        return TFLiteOptions(
            precision=values["precision"],
            image_input=values["image_input"],
            labels=labels,
            mean=network.mean,
            std=network.std,
            description=network.description.get("short_description", ""),
        )

    def int8_plan(self, options: TFLiteOptions) -> Int8Plan:
        if options.precision != "fp32":
            raise InputError(f"--quantize int8 with --precision {options.precision}: int8 models keep int8 weights")
        return Int8Plan(weight_bits=8, activations=True, scheme=INT8_SCHEME)

    def record_fields(self, options: TFLiteOptions) -> dict:
        return {"precision": options.precision, "image_input": options.image_input}

    def report_fields(self, options: TFLiteOptions) -> dict:
        return {
            "precision": options.precision,
            "image_input": options.image_input,
            "labels": len(options.labels or ()),
            "layout": "NHWC",
        }

    def write(self, graph: Graph, path: Path, record: ArtifactRecord, options: TFLiteOptions) -> None:
        Path(path).write_bytes(build_model(graph, record.to_metadata(), options))

    def read_metadata(self, path: Path) -> dict[str, str]:
        try:
            model = read_model(path)
        except Exception as exc:  # the flatbuffer reader raises several types for corrupt input
            raise InputError(f"'{path}' is not a readable TFLite model ({type(exc).__name__}: {exc})") from None
        return {_text(m.name): _text(model.buffers[m.buffer].data) for m in model.metadata or []}

    def int8_checks(self, artifact: Path, quantized: Graph, feed: np.ndarray, output: np.ndarray) -> list[Check]:
        """Every layer against the fake-quant reference of that layer, fed the artifact's own int8
        inputs (the reference kernels', in a child process): a wrong weight, scale or layout shows
        at its layer, and rounding differences cannot compound through the depth of the network."""

        try:
            found = _in_child("tensors", artifact, feed)
        except RuntimeError as exc:
            return [Check("layers", {"error": str(exc)}, False, str(exc))]
        tensors = {k.rsplit("|", 2)[0]: (v, *_quantization(k)) for k, v in found.items()}

        def real(node_name: str) -> np.ndarray:
            r = dequantized(*tensors[f"{INPUT_NAME}.int8" if node_name in quantized.inputs else node_name])
            if r.ndim == 4:
                return np.transpose(r, (0, 3, 1, 2))
            flattened = quantized.input_shapes(node_name)[0] if quantized.node(node_name).op == "flatten" else None
            if flattened is not None and len(flattened) == 3:  # held H×W×C here, C×H×W in the IR
                c, h, w = flattened
                return r.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(len(r), -1)
            return r

        def allowance(name: str, inputs: list[np.ndarray]) -> np.ndarray | None:
            node = quantized.node(name)
            if node.op != "resize":
                return None
            return resize_allowance(inputs[0], node.attrs["size"]) / node.qparams.output.scale

        return [
            layer_by_layer(
                quantized,
                real,
                "LiteRT interpreter (reference kernels), every int8 tensor",
                LAYER_LSB_BOUND,
                allowance=allowance,
            )
        ]

    def constants(self, path: Path) -> dict[str, np.ndarray]:
        model = read_model(path)
        found = {}
        for t in model.subgraphs[0].tensors:
            data = model.buffers[t.buffer].data if t.buffer else None
            if data is not None and t.type in _NUMPY_TYPES:
                found[_text(t.name)] = np.frombuffer(
                    np.asarray(data, np.uint8).tobytes(), _NUMPY_TYPES[t.type]
                ).reshape(list(t.shape))
        return found

    def expected_constants(self, graph: Graph, record: ArtifactRecord) -> dict[str, np.ndarray]:
        """Each conv/fc's weights and bias in TFLite's layout: float32, float16 in an fp16 model, or
        the int8 weights and int32 biases of an int8 one."""
        half = (record.precision or "fp32") == "fp16"
        expected = {}
        for name in graph.topo():
            node = graph.node(name)
            if node.op not in ("conv", "fc"):
                continue
            layout, _ = weight_layout(graph, name)
            channels = node.params["weight"].shape[0]
            bias = node.params["bias"] if node.attrs["bias"] else np.zeros(channels, np.float32)
            q = node.qparams
            if q is not None and q.weight is not None:
                expected[f"{name}.weight"] = np.ascontiguousarray(layout(q.weight.q), dtype=np.int8)
                expected[f"{name}.bias"] = q.bias.q if q.bias is not None else np.zeros(channels, np.int32)
            elif half:
                expected[f"{name}.weight.fp16"] = layout(node.params["weight"]).astype(np.float32).astype(np.float16)
                expected[f"{name}.bias.fp16"] = bias.astype(np.float32).astype(np.float16)
            else:
                expected[f"{name}.weight"] = layout(node.params["weight"]).astype(np.float32)
                expected[f"{name}.bias"] = bias.astype(np.float32)
        return expected

    def fp16_weights_graph(self, emitted: Graph) -> Graph:
        """An fp16 model holds its convolution and fully connected weights and biases in float16 behind
        DEQUANTIZE, and LiteRT computes in float32."""
        graph = emitted.copy()
        for name in graph:
            node = graph.node(name)
            if node.op in ("conv", "fc"):
                for key in ("weight", "bias"):
                    if key in node.params:
                        node.params[key] = node.params[key].astype(np.float32).astype(np.float16).astype(np.float32)
        return graph

    def executors(self) -> list[Executor]:
        return [
            Executor("LiteRT interpreter (default kernels, XNNPACK)", run_litert),
            Executor("LiteRT interpreter (reference kernels, in a child process)", run_litert_reference),
        ]

    def timer(self, path: Path, threads: int) -> Timer:
        """LiteRT with its default op resolver (XNNPACK), as an app runs the model."""
        from importlib.metadata import version

        from ai_edge_litert.interpreter import Interpreter

        try:
            with _quiet_native_stderr():
                interpreter = Interpreter(model_path=str(path), num_threads=threads)
                interpreter.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for a file it cannot load
            raise InputError(f"'{path}' cannot be loaded by LiteRT ({type(exc).__name__}: {exc})") from None
        (inp,) = interpreter.get_input_details()
        interpreter.set_tensor(inp["index"], timing_input(list(inp["shape"]), inp["dtype"]))
        return Timer(f"LiteRT {version('ai-edge-litert')} (default op resolver, XNNPACK)", interpreter.invoke)


TARGET = TFLiteTarget()


if __name__ == "__main__":
    _child_main(*sys.argv[1:4])
