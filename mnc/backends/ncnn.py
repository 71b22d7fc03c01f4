"""The ncnn target (Tencent's mobile runtime): IR → a folder `NAME.ncnn/` holding the network as ncnn
loads it, `model.ncnn.param` (text: one line per layer, `Type name inputs outputs blobs… k=v…`) and
`model.ncnn.bin` (each layer's weights in order), and mnc's record `mnc.json`. Run by ncnn's own
runtime (the `ncnn` wheel).

ncnn's layers and parameter ids are those of its operator reference (docs/developer-guide/
operators.md in the ncnn repository). ncnn computes in float32 here: float16 storage and
arithmetic, bf16 and Winograd convolutions are switched off for verification, so the float32
bound derived for a direct evaluation holds. On a phone ncnn switches them on by default (an app
sets `opt.use_fp16_arithmetic` and `opt.use_winograd_convolution` to keep float32).
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnc.artifact import ArtifactRecord
from mnc.backends import ncnn_runner
from mnc.backends.lowering import Lowering, walk
from mnc.backends.ncnn_runner import BIN_FILE, PARAM_FILE, RECORD_FILE
from mnc.backends.target import (
    INPUT_NAME,
    Choice,
    Executor,
    NetworkFacts,
    Target,
    Timer,
    output_names,
    timing_input,
)
from mnc.errors import InputError
from mnc.ir.activations import IDENTITY
from mnc.ir.graph import Graph
from mnc.ir.node import Node
from mnc.ir.ops import dilation
from mnc.ir.ops.graph_input import pixel_scale
from mnc.ir.roundoff import float16_rounded
from mnc.parallel import child_environment

MAGIC = 7767517
# Before each convolution's and inner product's weights, how they are stored (ncnn's ModelBin).
FP32_TAG, FP16_TAG = 0, 0x01306B47
PRECISIONS = ("fp32", "fp16")  # fp16: weights stored in float16 (half the file), computed in float32
# The activations a Convolution or InnerProduct applies itself (its 9=type, 10=parameters).
_FUSED = {"relu": (1, ()), "relu6": (3, (0.0, 6.0)), "sigmoid": (4, ()), "hswish": (6, (1.0 / 6.0, 0.5))}
FUSED_ACTIVATIONS = tuple(_FUSED)
RUNTIME = "ncnn (CPU, float32 arithmetic, no Winograd, 1 thread)"


@dataclass(frozen=True)
class NcnnOptions:
    precision: str = "fp32"
    image_input: bool = False


@dataclass
class _Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, object] = field(default_factory=dict)
    weights: bytes = b""  # what the layer reads from the .bin file, in order


@dataclass
class _Network:
    """The network being written: its layers in order, their weights, each IR node's blob."""

    graph: Graph
    options: NcnnOptions
    layers: list[_Layer] = field(default_factory=list)
    weights: list[bytes] = field(default_factory=list)  # for the next layer
    values: dict = field(default_factory=dict)

    def layer(self, type_: str, name: str, inputs: list[str], params: dict | None = None, output: str | None = None):
        weights, self.weights = b"".join(self.weights), []
        self.layers.append(_Layer(type_, name, list(inputs), [output or name], params or {}, weights))
        return output or name

    def data(self, *arrays: np.ndarray) -> None:
        """Values ncnn reads as they are (biases, batch-norm statistics): float32."""
        self.weights.append(b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for a in arrays))

    def tagged(self, weight: np.ndarray) -> None:
        """A convolution's or inner product's weights, after the tag saying how they are stored
        (float16 data padded to 4 bytes)."""
        if self.options.precision == "fp16":
            half = np.ascontiguousarray(weight, dtype="<f2").tobytes()
            self.weights.append(struct.pack("<I", FP16_TAG) + half + b"\0" * (-len(half) % 4))
        else:
            self.weights.append(struct.pack("<I", FP32_TAG) + np.ascontiguousarray(weight, dtype="<f4").tobytes())


def _fused(node: Node) -> dict[int, object]:
    fn = node.attrs.get("fused_act")
    if fn is None or fn == IDENTITY:
        return {}
    kind, values = _FUSED[fn]
    return {9: kind, **({10: values} if values else {})}


def _conv(net: _Network, name: str, node: Node, xs: list):
    a, p = node.attrs, node.params
    weight = p["weight"]
    out, _, kh, kw = weight.shape
    top, left, bottom, right = a["pads"]
    (sh, sw), (dh, dw) = a["stride"], dilation(a)
    params = {0: out, 1: kw, 11: kh, 2: dw, 12: dh, 3: sw, 13: sh, 4: left, 15: right, 14: top, 16: bottom}
    params |= {5: int("bias" in p), 6: weight.size}
    grouped = a["groups"] > 1
    if grouped:
        params[7] = a["groups"]
    net.tagged(weight)
    if "bias" in p:
        net.data(p["bias"])
    return net.layer("ConvolutionDepthWise" if grouped else "Convolution", name, xs, params | _fused(node))


def _fc(net: _Network, name: str, node: Node, xs: list):
    p = node.params
    net.tagged(p["weight"])
    if "bias" in p:
        net.data(p["bias"])
    params = {0: p["weight"].shape[0], 1: int("bias" in p), 2: p["weight"].size}
    return net.layer("InnerProduct", name, xs, params | _fused(node))


def _batchnorm(net: _Network, name: str, node: Node, xs: list):
    p = node.params
    net.data(p["gamma"], p["mean"], p["var"], p["beta"])
    return net.layer("BatchNorm", name, xs, {0: p["gamma"].size, 1: float(node.attrs["eps"])})


def _add(net: _Network, name: str, node: Node, xs: list):
    if len(xs) == 2:
        return net.layer("BinaryOp", name, xs, {0: 0})
    return net.layer("Eltwise", name, xs, {0: 1})  # a sum of several


def _global_avgpool(net: _Network, name: str, node: Node, xs: list):
    """ncnn's global pooling gives a vector; the IR keeps C×1×1 (an SE block's 1×1 convs read it)."""
    pooled = net.layer("Pooling", name + ".pool", xs, {0: 1, 4: 1}, output=name + ".pooled")
    return net.layer("Reshape", name, [pooled], {0: 1, 1: 1, 2: node.shape[0]})


def _flatten(net: _Network, name: str, node: Node, xs: list):
    """The vector itself where it flattens a global pooling (a classifier's head, as pnnx writes it);
    the C×1×1 copy is then read by nothing and left out."""
    (producer,) = net.graph.inputs_of(name)
    if net.graph.node(producer).op == "global_avgpool":
        return producer + ".pooled"
    return net.layer("Flatten", name, xs)


def _per_anchor(net: _Network, name: str, node: Node, xs: list):
    """C×H×W → one row of `columns` values per anchor, in H, W, C order (each position's anchors)."""
    hwc = net.layer("Permute", name + ".hwc", xs, {0: 3}, output=name + ".hwc")
    return net.layer("Reshape", name, [hwc], {0: node.attrs["columns"], 1: -1})


def _activation(type_: str, params: dict | None = None):
    return lambda net, x, out, name: net.layer(type_, name, [x], params, output=out)


ACTIVATIONS = {
    "relu": _activation("ReLU"),
    "relu6": _activation("Clip", {0: 0.0, 1: 6.0}),
    "sigmoid": _activation("Sigmoid"),
    "silu": _activation("Swish"),
    "gelu": _activation("GELU", {0: 0}),  # 0: erf, not the tanh approximation
    "hswish": _activation("HardSwish", {0: 1.0 / 6.0, 1: 0.5}),
    "hsigmoid": _activation("HardSigmoid", {0: 1.0 / 6.0, 1: 0.5}),
    "identity": _activation("Noop"),
}


def _input(net: _Network, name: str, node: Node, xs: list):
    """The network's input: floats, or an image's pixels (0–255, as ncnn::Mat::from_pixels gives
    them, in a float Mat), which the affine after it normalises."""
    c, h, w = node.shape
    scale = pixel_scale(node.attrs)
    if scale is not None and scale != 1:
        raise LOWERING.refuse(f"pixels scaled by {scale:g} on the way in (ncnn takes them as they are)", name, node)
    return net.layer("Input", INPUT_NAME, [], {0: w, 1: h, 2: c})


def _affine(net: _Network, name: str, node: Node, xs: list):
    """x·scale + shift: a Scale layer with a bias (one value per channel: a single one is written for
    each), then the activation as a layer of its own."""
    net.data(*(affine_constants(node).values()))
    fn = node.attrs.get("fused_act")
    if fn is None or fn == IDENTITY:
        return net.layer("Scale", name, xs, {0: node.shape[0], 1: 1})
    x = net.layer("Scale", name, xs, {0: node.shape[0], 1: 1}, output=f"{name}.preact")
    return LOWERING.activate(net, fn, x, name, f"{name}.act", node)


def affine_constants(node: Node) -> dict[str, np.ndarray]:
    """An affine's scale and shift as ncnn's Scale holds them: one value per channel."""
    return {k: np.broadcast_to(node.params[k], (node.shape[0],)) for k in ("scale", "shift")}


OPS = {
    "input": _input,
    "conv": _conv,
    "fc": _fc,
    "batchnorm": _batchnorm,
    "affine": _affine,
    "act": lambda net, name, node, xs: LOWERING.activate(net, node.attrs["fn"], xs[0], name, name, node),
    "add": _add,
    "mul": lambda net, name, node, xs: net.layer("BinaryOp", name, xs, {0: 2}),
    "global_avgpool": _global_avgpool,
    "flatten": _flatten,
    "softmax": lambda net, name, node, xs: net.layer("Softmax", name, xs, {0: 0, 1: 1}),
    "avgpool": lambda net, name, node, xs: net.layer(
        "Pooling",
        name,
        xs,
        {
            0: 1,
            1: node.attrs["kernel"][1],
            11: node.attrs["kernel"][0],
            2: node.attrs["stride"][1],
            12: node.attrs["stride"][0],
            5: 1,
        },
    ),
    # align_corner 0: input sampled at (i + 0.5)·in/out − 0.5, clamped (half-pixel centres).
    "resize": lambda net, name, node, xs: net.layer(
        "Interp", name, xs, {0: 2, 3: node.attrs["size"][0], 4: node.attrs["size"][1], 6: 0}
    ),
    "concat": lambda net, name, node, xs: net.layer("Concat", name, xs, {0: 0}),
    "per_anchor": _per_anchor,
}
LOWERING = Lowering("ncnn", OPS, ACTIVATIONS)


def _value(v) -> str:
    if isinstance(v, tuple):  # an array: its id is −23300 − id, then count and values
        return ",".join([str(len(v)), *(_value(x) for x in v)])
    return f"{v:.9e}" if isinstance(v, float) else str(v)


def _param_line(layer: _Layer) -> str:
    fields = [f"{layer.type:<24}", f"{layer.name:<32}", str(len(layer.inputs)), str(len(layer.outputs))]
    fields += layer.inputs + layer.outputs
    for key, v in layer.params.items():
        fields.append(f"{-23300 - key if isinstance(v, tuple) else key}={_value(v)}")
    return " ".join(fields)


def _read(layers: list[_Layer], outputs: set[str]) -> list[_Layer]:
    """The layers whose results are read, by a later layer or as the network's outputs."""
    kept: list[_Layer] = []
    needed = set(outputs)
    for layer in reversed(layers):
        if needed.intersection(layer.outputs):
            kept.append(layer)
            needed.update(layer.inputs)
    return kept[::-1]


def _with_splits(layers: list[_Layer]) -> list[_Layer]:
    """ncnn gives each blob one reader: a blob read by several gets a Split into copies, one per reader."""
    readers: dict[str, int] = {}
    for layer in layers:
        for blob in layer.inputs:
            readers[blob] = readers.get(blob, 0) + 1
    result, copies = [], {}
    for layer in layers:
        layer.inputs = [copies[b].pop(0) if b in copies else b for b in layer.inputs]
        result.append(layer)
        for blob in layer.outputs:
            if readers.get(blob, 0) > 1:
                names = [f"{blob}.split{i}" for i in range(readers[blob])]
                copies[blob] = list(names)
                result.append(_Layer("Split", f"{blob}.split", [blob], names))
    return result


def write(graph: Graph, path: Path, metadata: dict[str, str], options: NcnnOptions) -> None:
    net = _Network(graph, options)
    walk(graph, net, LOWERING)
    for node, label in zip(graph.outputs, output_names(graph)):  # outputs carry the model's names
        blob = net.values[node]
        for layer in net.layers:
            layer.outputs = [label if b == blob else b for b in layer.outputs]
            layer.inputs = [label if b == blob else b for b in layer.inputs]
    layers = _with_splits(_read(net.layers, set(output_names(graph))))
    blobs = {b for layer in layers for b in layer.outputs}
    lines = [str(MAGIC), f"{len(layers)} {len(blobs)}", *(_param_line(layer) for layer in layers)]
    path.mkdir(parents=True, exist_ok=True)
    (path / PARAM_FILE).write_text("\n".join(lines) + "\n")
    (path / BIN_FILE).write_bytes(b"".join(layer.weights for layer in layers))
    (path / RECORD_FILE).write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")


# ---- running ------------------------------------------------------------------------------------


def run_ncnn(artifact: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ncnn's runtime on the batch, in a child process (mnc/backends/ncnn_runner.py): ncnn is native
    code, and a network it cannot run may crash the process that runs it."""
    ((name, batch),) = feeds.items()
    with tempfile.TemporaryDirectory(prefix="mnc-ncnn-") as tmp:
        np.savez(Path(tmp) / "input.npz", name=name, batch=np.asarray(batch, np.float32))
        done = subprocess.run(
            [sys.executable, ncnn_runner.__file__, str(artifact), tmp],
            capture_output=True,
            text=True,
            env=child_environment(),
        )
        if done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            if done.returncode < 0:
                why = [f"ncnn crashed ({signal.Signals(-done.returncode).name})"]
            raise RuntimeError(why[0])
        with np.load(Path(tmp) / "output.npz") as out:
            return [out[f"arr_{i}"] for i in range(len(out.files))]


# ---- reading back -------------------------------------------------------------------------------


# Weights each layer type holds, in order: (name, whether a float32 tag precedes it, its length).
def _slots(type_: str, params: dict[int, str]) -> list[tuple[str, bool, int]]:
    """The weights a layer of this type holds, in order: (name, whether a storage tag precedes them,
    how many values)."""
    if type_ in ("Convolution", "ConvolutionDepthWise", "InnerProduct"):
        size_key = 2 if type_ == "InnerProduct" else 6
        bias = int(params.get(1 if type_ == "InnerProduct" else 5, "0"))
        slots = [("weight", True, int(params[size_key]))]
        return slots + ([("bias", False, int(params[0]))] if bias else [])
    if type_ == "BatchNorm":
        return [(k, False, int(params[0])) for k in ("gamma", "mean", "var", "beta")]
    if type_ == "Scale":
        return [("scale", False, int(params[0]))] + ([("shift", False, int(params[0]))] if params.get(1) else [])
    return []


def read_layers(artifact: Path) -> list[tuple[str, str, dict[int, str]]]:
    """(type, name, {param id: text}) of each layer of the saved network."""
    lines = (Path(artifact) / PARAM_FILE).read_text().split("\n")
    if lines[0].strip() != str(MAGIC):
        raise InputError(f"'{artifact}': {PARAM_FILE} is not an ncnn network (no magic {MAGIC})")
    layers = []
    for line in lines[2:]:
        if not line.strip():
            continue
        fields = line.split()
        n_in, n_out = int(fields[2]), int(fields[3])
        params = dict(f.split("=", 1) for f in fields[4 + n_in + n_out :])
        layers.append((fields[0], fields[1], {int(k): v for k, v in params.items()}))
    return layers


def read_constants(artifact: Path) -> dict[str, np.ndarray]:
    """Each layer's weights as the saved network holds them, widened to float32; a layer whose data
    the file does not hold whole (a truncated file, an unknown tag) is left out, and so reported
    missing."""
    data = (Path(artifact) / BIN_FILE).read_bytes()
    offset, constants = 0, {}
    for type_, name, params in read_layers(artifact):
        for slot, tagged, count in _slots(type_, params):
            dtype = "<f4"
            if tagged:
                tag = struct.unpack_from("<I", data, offset)[0] if offset + 4 <= len(data) else None
                if tag not in (FP32_TAG, FP16_TAG):
                    return constants
                dtype, offset = ("<f2" if tag == FP16_TAG else "<f4"), offset + 4
            size = count * np.dtype(dtype).itemsize
            if offset + size > len(data):
                return constants
            constants[f"{name}.{slot}"] = np.frombuffer(data, dtype, count, offset).astype(np.float32)
            offset += size + (-size % 4)
    return constants


def _stored(slot: str, value: np.ndarray, precision: str) -> np.ndarray:
    """A parameter as the network holds it: conv and fc weights in float16 in an fp16 network."""
    value = value.astype(np.float32)
    return float16_rounded(value) if precision == "fp16" and slot == "weight" else value


class NcnnTarget(Target):
    name = "ncnn"
    suffix = ".ncnn"
    choices = {"precision": Choice(PRECISIONS, "fp32"), "image_input": Choice(default=False)}
    fused_activations = FUSED_ACTIVATIONS

    def lowering(self) -> Lowering:
        return LOWERING

    def make_options(self, values: dict, network: NetworkFacts) -> NcnnOptions:
        return NcnnOptions(values["precision"], bool(values["image_input"]))

    def record_fields(self, options: NcnnOptions) -> dict:
        return {"precision": options.precision, "image_input": options.image_input}

    def report_fields(self, options: NcnnOptions) -> dict:
        return {"precision": options.precision, "image_input": options.image_input}

    def write(self, graph: Graph, path: Path, record: ArtifactRecord, options: NcnnOptions) -> None:
        metadata = record.to_metadata()
        metadata["mnc.outputs"] = ",".join(output_names(graph))
        write(graph, path, metadata, options)

    def fp16_weights_graph(self, emitted: Graph) -> Graph:
        """An fp16 network stores its conv and fc weights in float16; ncnn widens them when it loads
        the network and computes in float32."""
        graph = emitted.copy()
        for name in graph:
            node = graph.node(name)
            node.params = {k: _stored(k, v, "fp16") for k, v in node.params.items()}
        return graph

    def read_metadata(self, path: Path) -> dict[str, str]:
        try:
            metadata = json.loads((Path(path) / RECORD_FILE).read_text())
            read_layers(path)
        except (OSError, ValueError) as exc:
            raise InputError(f"'{path}' is not a readable ncnn network written by mnc ({type(exc).__name__})") from None
        return metadata

    def constants(self, path: Path) -> dict[str, np.ndarray]:
        return read_constants(path)

    def expected_constants(self, graph: Graph, record: ArtifactRecord) -> dict[str, np.ndarray]:
        precision = record.precision or "fp32"
        expected = {}
        for name in graph.topo():
            node = graph.node(name)
            params = affine_constants(node) if node.op == "affine" else node.params
            for slot, value in params.items():
                expected[f"{name}.{slot}"] = _stored(slot, value, precision).ravel()
        return expected

    def executors(self) -> list[Executor]:
        return [Executor(RUNTIME, run_ncnn)]

    def timer(self, path: Path, threads: int) -> Timer:
        """ncnn as an app runs it by default (float16 storage and Winograd where the CPU has them)."""
        ncnn, net = ncnn_runner.load(path, threads, exact=False)
        (shape,) = [p for t, _, p in read_layers(path) if t == "Input"]
        sample = timing_input((1, int(shape[2]), int(shape[1]), int(shape[0])), np.float32)
        outputs = ncnn_runner.output_blobs(path)[:1]
        plural = "s" if threads > 1 else ""
        return Timer(
            f"ncnn {ncnn.__version__} (CPU, {threads} thread{plural}, its defaults)",
            lambda: ncnn_runner.run(ncnn, net, INPUT_NAME, outputs, sample),
        )


TARGET = NcnnTarget()
