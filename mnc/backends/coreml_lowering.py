"""IR → a Core ML ML Program (.mlpackage): the Core ML target's lowering table
(mnc/backends/lowering.py), written with mnc's MIL writer (mnc/backends/coreml_mil.py, which takes
coremltools' MIL builder calls), and the package it is saved as.

Reads the IR only.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnc.backends.coreml_mil import Program, model_folder, proto, serialise
from mnc.backends.lowering import Lowering, walk
from mnc.backends.target import INPUT_NAME, output_name, output_names
from mnc.ir.activations import IDENTITY
from mnc.ir.graph import Graph
from mnc.ir.node import Node
from mnc.ir.ops import dilation
from mnc.ir.ops.affine import channels
from mnc.ir.ops.graph_input import pixel_scale
from mnc.version import __version__

# int8 activations (MIL quantize/dequantize) need iOS17 / macOS14; int8 weights alone, iOS16 / macOS13.
ACTIVATION_INT8_TARGETS = ("iOS17", "iOS18", "macOS14", "macOS15")
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
PRECISIONS = ("fp16", "fp32")
DEFAULT_PRECISION = "fp16"  # what Core ML apps ship; fp32 on request
DEFAULT_TARGET = "iOS16"


@dataclass(frozen=True)
class CoreMLOptions:
    precision: str = DEFAULT_PRECISION
    deployment_target: str = DEFAULT_TARGET
    image_input: bool = False
    labels: tuple[str, ...] | None = None
    metadata: dict = field(default_factory=dict)  # author, license, version, short_description

    @property
    def int8_activations(self) -> bool:
        return self.deployment_target in ACTIVATION_INT8_TARGETS


def write(graph: Graph, path: Path, metadata: dict[str, str], options: CoreMLOptions) -> None:
    """Write the .mlpackage: the program (mnc/backends/coreml_mil.py), its model description, its
    weight file and the package's manifest."""
    program = Program(options.deployment_target)
    (input_node,) = graph.inputs
    x = program.input(INPUT_NAME, (1, *graph.node(input_node).shape))
    scale = pixel_scale(graph.node(input_node).attrs)
    if scale is not None:  # Core ML scales image pixels by one number, as coremltools' ImageType does
        x = program.mul(x=x, y=scale, name=IMAGE_VALUE)
    program.outputs = lower(program, graph, options, x)
    if options.labels:  # coremltools' classifier: the label and each label's probability
        (probabilities,) = program.outputs
        program.outputs = list(program.classify(probabilities=probabilities, classes=list(options.labels)))
    mil, weights = serialise(program, build_info={"mnc-version": __version__})
    model = describe(proto(), program, graph, options, metadata)
    model.mlProgram.CopyFrom(mil)
    save_package(Path(path), model.SerializeToString(deterministic=True), weights)


def lower(mb, graph: Graph, options: CoreMLOptions, model_input) -> list:
    """Lower the graph with `mb`, a MIL builder (mnc's `Program`, or coremltools' `Builder` in the
    tests that compare the two); returns the program's outputs, in fp32."""
    ctx = _Program(mb, graph, options, model_input)
    walk(graph, ctx, LOWERING)
    results = []
    for out, label in zip(graph.outputs, output_names(graph)):
        if options.precision == "fp16":
            results.append(mb.cast(x=ctx.values[out], dtype="fp32", name=label))
        elif options.int8_activations and graph.node(out).qparams:
            results.append(mb.identity(x=ctx.values[out], name=label))
        else:
            results.append(ctx.values[out])
    return results


def describe(pb, program: Program, graph: Graph, options: CoreMLOptions, metadata: dict[str, str]):
    """The model's specification without its program: version, inputs and outputs as apps see them,
    metadata."""
    ft = pb.FeatureTypes_pb2
    model = pb.Model_pb2.Model(specificationVersion=program.specification_version)
    (model_input,) = program.inputs
    feature = model.description.input.add(name=model_input.name)
    if options.image_input:
        _, c, h, w = model_input.shape
        image = feature.type.imageType
        image.width, image.height = w, h
        image.colorSpace = ft.ImageFeatureType.RGB if c == 3 else ft.ImageFeatureType.GRAYSCALE
    else:
        feature.type.multiArrayType.shape.extend(model_input.shape)
        feature.type.multiArrayType.dataType = ft.ArrayFeatureType.FLOAT32
    for var in program.outputs:
        feature = model.description.output.add(name=var.name)
        if var.dtype == "string":
            feature.type.stringType.SetInParent()
        elif var.dtype == "dict":
            feature.type.dictionaryType.stringKeyType.SetInParent()
        else:
            feature.type.multiArrayType.shape.extend(var.shape)
            feature.type.multiArrayType.dataType = ft.ArrayFeatureType.FLOAT32
    if options.labels:
        model.description.predictedFeatureName, model.description.predictedProbabilitiesName = (
            v.name for v in program.outputs
        )
    describe_for_apps(model, graph, options, metadata)
    return model


def describe_for_apps(model, graph: Graph, options: CoreMLOptions, metadata: dict[str, str]) -> None:
    """The metadata and feature descriptions Xcode shows: the spec's description, author, license and
    version, mnc's build facts, and what each input and output is."""
    meta = model.description.metadata
    meta.shortDescription = options.metadata.get("short_description", "")
    meta.author = options.metadata.get("author", "")
    meta.license = options.metadata.get("license", "")
    meta.versionString = options.metadata.get("version", "")
    for key, value in metadata.items():
        meta.userDefined[key] = str(value)
    _describe_features(model, graph, options)


# Core ML finds the model and its weights through the manifest, by identifiers that need only be
# unique within the package: fixed ones keep builds byte-identical (coremltools draws random ones).
_MANIFEST_ITEMS = {
    "model.mlmodel": ("CoreML Model Specification", "com.apple.CoreML/model.mlmodel"),
    "weights": ("CoreML Model Weights", "com.apple.CoreML/weights"),
}


def save_package(path: Path, model: bytes, weights: bytes) -> None:
    data = model_folder(path)
    (data / "weights").mkdir(parents=True, exist_ok=True)
    (data / "model.mlmodel").write_bytes(model)
    (data / "weights" / "weight.bin").write_bytes(weights)
    entries = {
        str(uuid.uuid5(uuid.NAMESPACE_URL, f"mnc:{name}")).upper(): {
            "author": "com.apple.CoreML",
            "description": description,
            "name": name,
            "path": item_path,
        }
        for name, (description, item_path) in _MANIFEST_ITEMS.items()
    }
    root = next(i for i, e in entries.items() if e["name"] == "model.mlmodel")
    manifest = {"fileFormatVersion": "1.0.0", "itemInfoEntries": entries, "rootModelIdentifier": root}
    (path / "Manifest.json").write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


def _describe_features(spec, graph: Graph, options: CoreMLOptions) -> None:
    """What Xcode shows of the model: its kind (an image classifier gets a preview) and a short
    description of each input and output."""
    (input_node,) = graph.inputs
    c, h, w = graph.node(input_node).shape
    if options.image_input and options.labels:
        spec.description.metadata.userDefined["com.apple.coreml.model.preview.type"] = "imageClassifier"
    for feature in spec.description.input:
        feature.shortDescription = (
            f"{w}×{h} {'RGB' if c == 3 else 'grayscale'} image; mnc applies the spec's normalisation"
            if options.image_input
            else f"1×{c}×{h}×{w} float32, normalised as the spec says ((pixel/255 − mean)/std)"
        )
    for feature in spec.description.output:
        if feature.name == spec.description.predictedFeatureName:
            feature.shortDescription = "the most likely class label"
        elif feature.name == spec.description.predictedProbabilitiesName:
            feature.shortDescription = "probability of each class label"
        elif graph.output_labels:
            node = graph.outputs[output_names(graph).index(feature.name)]
            shape = "×".join(map(str, (1, *graph.node(node).shape)))
            feature.shortDescription = f"{feature.name}, {shape} float32 (the spec's output of that name)"
        else:
            feature.shortDescription = (
                "class probabilities" if output_name(graph) == "probabilities" else "class scores (logits)"
            )


@dataclass
class _Program:
    """The ML Program being built: coremltools' MIL builder, the IR and options, the program's input
    and each lowered node's MIL variable."""

    mb: object
    graph: Graph
    options: CoreMLOptions
    model_input: object
    values: dict = field(default_factory=dict)


IMAGE_VALUE = INPUT_NAME + "__scaled__"  # an image input's pixels as the image type hands them over
FP16_INPUT = "input_fp16"  # a float input in an fp16 program


def _input(ctx: _Program, name: str, node: Node, xs: list):
    """The program's input: an image as its image type gives it (in float32: what reads it computes in
    float32, node_precision), else in fp16 for an fp16 program and quantised (int8)."""
    mb, options = ctx.mb, ctx.options
    if pixel_scale(node.attrs) is not None:
        return ctx.model_input
    x = ctx.model_input
    if options.precision == "fp16":
        x = mb.cast(x=x, dtype="fp16", name=FP16_INPUT)
    return _quantised(mb, x, node, options, "input")


def node_precision(graph: Graph, name: str, precision: str) -> str:
    """What a node computes in: the program's precision, but float32 for what reads an image input
    (Core ML hands an image over in float32: its normalisation is as exact as float32 allows, and
    its result is rounded to the program's precision once)."""
    if any(pixel_scale(graph.node(p).attrs) is not None for p in graph.inputs_of(name)):
        return "fp32"
    return precision


def _each_node(lower, ctx: _Program, name: str, node: Node, xs: list):
    """Every op is lowered under its MIL name, with its constants in its precision (the result cast
    to the program's, named as the node), and its result rounded to its grid where activations are
    int8."""
    options = ctx.options
    op_name = mil_op_name(ctx.graph, name, options.precision, options.int8_activations)
    precision = node_precision(ctx.graph, name, options.precision)
    if precision != options.precision:
        y = lower(ctx, op_name + "_" + precision, typed_params(node, precision), xs)
        y = ctx.mb.cast(x=y, dtype=options.precision, name=op_name)
    else:
        y = lower(ctx, op_name, typed_params(node, precision), xs)
    return _quantised(ctx.mb, y, node, options, mil_name(name))


def mil_op_name(graph: Graph, name: str, precision: str, int8_activations: bool) -> str:
    """The MIL name of a node's op: the model's output name for the last one when it is the program's
    output as it stands, else the node's name; its constants are named after it (`…_weight`)."""
    quantised = int8_activations and graph.node(name).qparams is not None
    if name in graph.outputs and precision != "fp16" and not quantised:
        return output_names(graph)[graph.outputs.index(name)]
    return mil_name(name)


def typed_params(data: Node, precision: str) -> Node:
    """fp16 programs are built in fp16 directly (weights rounded to nearest), rather than left to
    coremltools' fp16 pass: the same program, without a pass pipeline re-validating it. A quantised
    node's bias is its int32 value dequantised."""
    params = dict(data.params)
    if data.qparams is not None and data.qparams.bias is not None:
        params["bias"] = data.qparams.bias.dequantized().astype(np.float32)
    if precision == "fp16":
        params = {k: v.astype(np.float16) for k, v in params.items()}
    return dataclasses.replace(data, params=params)


def _weight(mb, name: str, data: Node):
    """A conv/fc weight: a constant, or int8 values dequantised by Core ML when it loads the model."""
    q = data.qparams.weight if data.qparams is not None else None
    if q is None:
        return mb.const(val=data.params["weight"], name=name + "_weight")
    dtype = data.params["weight"].dtype  # fp16 in fp16 programs
    return mb.constexpr_affine_dequantize(
        quantized_data=np.asarray(q.q, dtype=np.int8),
        zero_point=np.int8(0),
        scale=np.asarray(q.scale, dtype=dtype),
        axis=0,
        name=name + "_weight",
    )


def _quantised(mb, x, data: Node, options: CoreMLOptions, name: str):
    """Round a tensor to its uint8 grid (int8 activations, iOS17+): quantize, then dequantize."""
    q = data.qparams
    if q is None or not options.int8_activations:
        return x
    scalar = _scalar(options)
    scale, zero_point = scalar(q.output.scale), np.uint8(q.output.zero_point)
    quantized = mb.quantize(input=x, scale=scale, zero_point=zero_point, output_dtype="uint8", name=name + "_q")
    return mb.dequantize(input=quantized, scale=scale, zero_point=zero_point, name=name + "_dq")


def _scalar(options: CoreMLOptions):
    """The type of every value an op reads in this program: fp16 programs cast their input to fp16."""
    return np.float16 if options.precision == "fp16" else np.float32


def mil_name(name: str) -> str:
    return name.replace(".", "_")  # MIL names are identifiers


def _fused(ctx: _Program, y, name: str, node: Node):
    """A conv's or fc's result y with its fused activation, if any; the result is named `name`."""
    fn = node.attrs.get("fused_act")
    return y if fn is None or fn == IDENTITY else LOWERING.activate(ctx, fn, y, name, name, node)


def _hard_sigmoid(ctx: _Program, x, out: str, name: str):  # relu6(x + 3)/6 = clip(x/6 + 1/2, 0, 1)
    scalar = _scalar(ctx.options)  # MIL wants the type of x
    return ctx.mb.sigmoid_hard(x=x, alpha=scalar(1.0 / 6.0), beta=scalar(0.5), name=out)


def _hard_swish(ctx: _Program, x, out: str, name: str):
    return ctx.mb.mul(x=x, y=_hard_sigmoid(ctx, x, name + "_gate", name + "_gate"), name=out)


ACTIVATIONS = {
    "relu": lambda ctx, x, out, name: ctx.mb.relu(x=x, name=out),
    "relu6": lambda ctx, x, out, name: ctx.mb.relu6(x=x, name=out),
    "sigmoid": lambda ctx, x, out, name: ctx.mb.sigmoid(x=x, name=out),
    "silu": lambda ctx, x, out, name: ctx.mb.silu(x=x, name=out),
    "gelu": lambda ctx, x, out, name: ctx.mb.gelu(x=x, mode="EXACT", name=out),
    "hsigmoid": _hard_sigmoid,
    "hswish": _hard_swish,
    "identity": lambda ctx, x, out, name: ctx.mb.identity(x=x, name=out),
}


def _conv(ctx: _Program, name: str, node: Node, xs: list):
    a, p = node.attrs, node.params
    top, left, bottom, right = a["pads"]
    y = ctx.mb.conv(
        x=xs[0],
        weight=_weight(ctx.mb, name, node),
        bias=_const(ctx.mb, p.get("bias"), name + "_bias"),
        strides=a["stride"],
        pad_type="custom",
        pad=[top, bottom, left, right],
        dilations=dilation(a),
        groups=a["groups"],
        name=name if not a.get("fused_act") else name + "_preact",
    )
    return _fused(ctx, y, name, node)


def _fc(ctx: _Program, name: str, node: Node, xs: list):
    a, p = node.attrs, node.params
    y = ctx.mb.linear(
        x=xs[0],
        weight=_weight(ctx.mb, name, node),
        bias=_const(ctx.mb, p.get("bias"), name + "_bias"),
        name=name if not a.get("fused_act") else name + "_preact",
    )
    return _fused(ctx, y, name, node)


def _const(mb, value, name: str):
    return None if value is None else mb.const(val=value, name=name)


def _batchnorm(ctx: _Program, name: str, node: Node, xs: list):
    mb, p = ctx.mb, node.params
    return mb.batch_norm(
        x=xs[0],
        mean=_const(mb, p["mean"], name + "_mean"),
        variance=_const(mb, p["var"], name + "_var"),
        gamma=_const(mb, p["gamma"], name + "_gamma"),
        beta=_const(mb, p["beta"], name + "_beta"),
        # MIL wants epsilon of the type of x: an fp16 program's is float16 (fp32 programs' stay a float).
        epsilon=np.float16(node.attrs["eps"]) if ctx.options.precision == "fp16" else float(node.attrs["eps"]),
        name=name,
    )


def _affine(ctx: _Program, name: str, node: Node, xs: list):
    """x·scale + shift: mul, then add, their constants shaped to broadcast over the channels."""
    mb, ndim = ctx.mb, len(node.shape) + 1
    scale, shift = (mb.const(val=channels(node.params[k], ndim), name=f"{name}_{k}") for k in ("scale", "shift"))
    y = mb.add(
        x=mb.mul(x=xs[0], y=scale, name=name + "_scaled"),
        y=shift,
        name=name if not node.attrs.get("fused_act") else name + "_preact",
    )
    return _fused(ctx, y, name, node)


def _add(ctx: _Program, name: str, node: Node, xs: list):
    y = xs[0]
    for i, other in enumerate(xs[1:]):
        y = ctx.mb.add(x=y, y=other, name=name if i == len(xs) - 2 else f"{name}_{i}")
    return y


OPS = {
    "input": _input,
    "conv": _conv,
    "fc": _fc,
    "batchnorm": _batchnorm,
    "affine": _affine,
    "act": lambda ctx, name, node, xs: LOWERING.activate(ctx, node.attrs["fn"], xs[0], name, name, node),
    "add": _add,
    "mul": lambda ctx, name, node, xs: ctx.mb.mul(x=xs[0], y=xs[1], name=name),
    "global_avgpool": lambda ctx, name, node, xs: ctx.mb.reduce_mean(x=xs[0], axes=[2, 3], keep_dims=True, name=name),
    "flatten": lambda ctx, name, node, xs: ctx.mb.reshape(x=xs[0], shape=[1, -1], name=name),
    "softmax": lambda ctx, name, node, xs: ctx.mb.softmax(x=xs[0], axis=1, name=name),
    "avgpool": lambda ctx, name, node, xs: ctx.mb.avg_pool(
        x=xs[0],
        kernel_sizes=node.attrs["kernel"],
        strides=node.attrs["stride"],
        pad_type="valid",
        name=name,
    ),
    # UNALIGN_CORNERS samples the input at (i + 0.5)·in/out − 0.5, clamped: half-pixel centres.
    "resize": lambda ctx, name, node, xs: ctx.mb.resize_bilinear(
        x=xs[0],
        target_size_height=node.attrs["size"][0],
        target_size_width=node.attrs["size"][1],
        sampling_mode="UNALIGN_CORNERS",
        name=name,
    ),
    "concat": lambda ctx, name, node, xs: ctx.mb.concat(values=xs, axis=1, name=name),
    "per_anchor": lambda ctx, name, node, xs: ctx.mb.reshape(
        x=ctx.mb.transpose(x=xs[0], perm=[0, 2, 3, 1], name=name + "_nhwc"),
        shape=[1, -1, node.attrs["columns"]],
        name=name,
    ),
}
LOWERING = Lowering("coreml", OPS, ACTIVATIONS, around=_each_node)
