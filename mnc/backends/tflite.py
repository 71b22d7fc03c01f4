"""The TFLite target: IR → a LiteRT flatbuffer, built with the schema's object API that ships in
ai-edge-litert, and run by the LiteRT interpreter.

NHWC throughout, as TFLite's kernels want it: the input is [N, H, W, C], convolution weights are
OHWI (depthwise 1HWO), and the file holds no TRANSPOSE. Explicit pads become TFLite's SAME where
they are SAME's, VALID where there are none, else a PAD then VALID (PyTorch's symmetric padding at
stride 2 on even sizes). Executors take and give the reference's NCHW layout; they transpose at
the edges, outside the model.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from mnc.artifact import ArtifactRecord
from mnc.backends.target import Choice, Executor, NetworkFacts, Target, output_name, read_labels
from mnc.errors import InputError
from mnc.ir.graph import Graph
from mnc.ir.node import Node

Op = schema.BuiltinOperator
Opt = schema.BuiltinOptions
Act = schema.ActivationFunctionType
T = schema.TensorType
INPUT_NAME = "input"
SIGNATURE = "serving_default"
BUFFER_ALIGNMENT = 16  # the schema's force_align for buffer data, which the Python packer ignores
PRECISIONS = ("fp32", "fp16")
FUSED = {"relu": Act.RELU, "relu6": Act.RELU6}  # activations a conv/fc/add can carry
# Operator versions as TensorFlow's converter sets them for the float graphs mnc writes
# (tensorflow/lite/tools/versioning/op_version.cc); DEQUANTIZE of float16 weights is version 3.
FLOAT_VERSIONS = {Op.DEQUANTIZE: 3}


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
    tensors: list = field(default_factory=list)
    buffers: list = field(default_factory=lambda: [_AlignedBuffer()])  # buffer 0: the empty sentinel
    operators: list = field(default_factory=list)
    opcodes: dict = field(default_factory=dict)  # (builtin, version) → index
    names: dict = field(default_factory=dict)  # IR node → tensor index of its output

    def tensor(self, name: str, shape: list[int], dtype: int = T.FLOAT32, data: bytes | None = None) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type = name, list(shape), dtype
        if data is not None:
            buffer = _AlignedBuffer()
            buffer.data = data
            self.buffers.append(buffer)
            t.buffer = len(self.buffers) - 1
        elif shape and shape[0] == 1 and len(shape) > 1:
            t.shapeSignature = [-1, *shape[1:]]  # activations: any batch
        self.tensors.append(t)
        return len(self.tensors) - 1

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
        version = FLOAT_VERSIONS.get(builtin, 1)
        code = self.opcodes.setdefault((builtin, version), len(self.opcodes))
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)
        return outputs[0]

    def codes(self) -> list:
        result = []
        for (builtin, version), _ in sorted(self.opcodes.items(), key=lambda kv: kv[1]):
            c = schema.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = builtin, min(builtin, 127), version
            result.append(c)
        return result


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
    shifted = w.tensor(f"{name}.plus3", w.tensors[x].shape)
    w.op(
        Op.ADD,
        [x, w.constant(f"{name}.three", np.float32(3.0))],
        [shifted],
        Opt.AddOptions,
        _options(schema.AddOptionsT, fusedActivationFunction=Act.RELU6),
    )
    return w.op(
        Op.MUL,
        [shifted, w.constant(f"{name}.sixth", np.float32(1.0 / 6.0))],
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
    out = w.tensor(name, _nhwc(node.shape))
    if fn is None or fn in FUSED:
        emit(out, FUSED.get(fn, Act.NONE))
    else:
        pre = w.tensor(f"{name}.preact", _nhwc(node.shape))
        emit(pre, Act.NONE)
        ACTIVATIONS[fn](w, pre, out, f"{name}.act")
    w.names[name] = out


# ---- ops ----------------------------------------------------------------------------------------


def _conv(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    a, p = node.attrs, node.params
    c_in, h, wd = graph.input_shapes(name)[0]
    (kh, kw), (sh, sw), (top, left, bottom, right) = a["kernel"], a["stride"], a["pads"]
    x = xs[0]
    if (top, bottom) == same_pads(h, kh, sh) and (left, right) == same_pads(wd, kw, sw):
        padding = schema.Padding.SAME
    else:
        padding = schema.Padding.VALID
        if any(a["pads"]):
            padded = w.tensor(f"{name}.pad", [1, h + top + bottom, wd + left + right, c_in])
            paddings = w.int32(f"{name}.paddings", [[0, 0], [top, bottom], [left, right], [0, 0]])
            x = w.op(Op.PAD, [x, paddings], [padded], Opt.PadOptions, _options(schema.PadOptionsT))
    weight = p["weight"]
    out_channels = weight.shape[0]
    bias = p["bias"] if a["bias"] else np.zeros(out_channels, np.float32)
    groups = a["groups"]
    if groups == 1:
        filt = w.constant(f"{name}.weight", weight.transpose(0, 2, 3, 1), weight=True)  # OIHW → OHWI
        b = w.constant(f"{name}.bias", bias, weight=True)
        options = _options(
            schema.Conv2DOptionsT, padding=padding, strideH=sh, strideW=sw, dilationHFactor=1, dilationWFactor=1
        )
        builtin, options_type = Op.CONV_2D, Opt.Conv2DOptions
    elif groups == c_in:  # depthwise, with out_channels / c_in filters per input channel
        filt = w.constant(f"{name}.weight", weight[:, 0].transpose(1, 2, 0)[None], weight=True)  # O1HW → 1HWO
        b = w.constant(f"{name}.bias", bias, weight=True)
        options = _options(
            schema.DepthwiseConv2DOptionsT,
            padding=padding,
            strideH=sh,
            strideW=sw,
            depthMultiplier=out_channels // c_in,
            dilationHFactor=1,
            dilationWFactor=1,
        )
        builtin, options_type = Op.DEPTHWISE_CONV_2D, Opt.DepthwiseConv2DOptions
    else:
        raise _unsupported(f"a grouped convolution ({groups} groups of {c_in} channels)", name, node)

    def emit(out: int, act: int) -> None:
        options.fusedActivationFunction = act
        w.op(builtin, [x, filt, b], [out], options_type, options)

    _with_activation(w, name, node, emit)


def _fc(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    weight = node.params["weight"]
    (producer,) = graph.inputs_of(name)
    source = graph.input_shapes(producer)[0] if graph.node(producer).op == "flatten" else None
    if source is not None and len(source) == 3 and source[1] * source[2] > 1:
        # The flattened map was C×H×W in the IR and is H×W×C here: reorder the weight's columns.
        c, h, wd = source
        weight = weight.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
    filt = w.constant(f"{name}.weight", weight, weight=True)
    bias = node.params["bias"] if node.attrs["bias"] else np.zeros(weight.shape[0], np.float32)
    b = w.constant(f"{name}.bias", bias, weight=True)

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
    out = w.tensor(name, _nhwc(node.shape))
    w.names[name] = ACTIVATIONS[node.attrs["fn"]](w, xs[0], out, name)


def _add(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
    total = xs[0]
    for i, other in enumerate(xs[1:]):
        last = i == len(xs) - 2
        out = w.tensor(name if last else f"{name}.{i}", _nhwc(node.shape))
        total = w.op(Op.ADD, [total, other], [out], Opt.AddOptions, _options(schema.AddOptionsT))
    w.names[name] = total


def _simple(builtin: int, options_type: int = Opt.NONE, options=None, extra=None):
    def lower(w: _Writer, graph: Graph, name: str, node: Node, xs: list[int]) -> None:
        inputs = xs + (extra(w, graph, name, node) if extra else [])
        out = w.tensor(name, _nhwc(node.shape))
        w.names[name] = w.op(builtin, inputs, [out], options_type, options() if options else None)

    return lower


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
}


# ---- the model ----------------------------------------------------------------------------------


def _input(w: _Writer, graph: Graph, options: TFLiteOptions) -> int:
    (name,) = graph.inputs
    shape = _nhwc(graph.node(name).shape)
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
    w = _Writer(fp16=options.precision == "fp16")
    graph_input = _input(w, graph, options)
    (input_node,) = graph.inputs
    w.names[input_node] = graph_input
    for name in graph.topo():
        node = graph.node(name)
        if node.op != "input":
            OPS[node.op](w, graph, name, node, [w.names[p] for p in graph.inputs_of(name)])
    (out_node,) = graph.outputs
    output = w.names[out_node]
    w.tensors[output].name = output_name(graph)
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.name = w.tensors, w.operators, "main"
    subgraph.inputs, subgraph.outputs = [0], [output]

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
    signature.outputs = [_options(schema.TensorMapT, name=output_name(graph), tensorIndex=output)]
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _buffer(data: bytes) -> _AlignedBuffer:
    b = _AlignedBuffer()
    b.data = data
    return b


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
        (out,) = interpreter.get_output_details()
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    return [np.transpose(y, (0, 3, 1, 2)) if y.ndim == 4 else y]


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


def _run_reference_kernels(artifact, feeds):
    return run_litert(artifact, feeds, reference_kernels=True)


def run_litert_reference(artifact, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The reference kernels, in a child process: on some graphs they abort the process instead of
    returning an error, and an abort must be a failed verification, not a crash of mnc."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_run_reference_kernels, str(artifact), feeds).result()
        except BrokenProcessPool:
            raise RuntimeError("LiteRT's reference kernels aborted the process running this model") from None


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

    def executors(self) -> list[Executor]:
        return [
            Executor("LiteRT interpreter (default kernels, XNNPACK)", run_litert),
            Executor("LiteRT interpreter (reference kernels, in a child process)", run_litert_reference),
        ]


TARGET = TFLiteTarget()
