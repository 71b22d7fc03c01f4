"""IR → Core ML ML Program (.mlpackage), built with coremltools' MIL builder.

Reads the IR only. coremltools is imported lazily: it is slow to import and only this target needs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnc.artifact import ArtifactRecord
from mnc.backends.coreml_exec import CoreMLProgram, coremltools, load_spec, run_coreml
from mnc.backends.target import (
    INPUT_NAME,
    Check,
    Choice,
    Executor,
    Int8Plan,
    NetworkFacts,
    Target,
    Timer,
    layer_by_layer,
    output_name,
    output_names,
    read_labels,
    timing_input,
)
from mnc.errors import InputError
from mnc.ir.activations import IDENTITY
from mnc.ir.graph import Graph
from mnc.ir.node import Node
from mnc.ir.ops import dilation

WEIGHT_BITS = 8  # Core ML's int8 kernels have no int16 pair sums to saturate
# Between quantize and dequantize Core ML computes in float, and rounds the result to the grid once:
# fed the same inputs, a layer differs from the reference by at most one step, where float32's
# rounding of the sum puts a value on the other side of a grid boundary.
LAYER_LSB_BOUND = 1.0
FP16_LAYER_SAMPLES = 4  # at most; every element of every layer of these is checked
# int8 activations (MIL quantize/dequantize) need iOS17 / macOS14; int8 weights alone, iOS16 / macOS13.
ACTIVATION_INT8_TARGETS = ("iOS17", "iOS18", "macOS14", "macOS15")
WEIGHT_INT8_TARGETS = ("iOS16", "macOS13", *ACTIVATION_INT8_TARGETS)
WEIGHTS_SCHEME = "int8 weights (constexpr_affine_dequantize, per-output-channel symmetric)"
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18", "macOS12", "macOS13", "macOS14", "macOS15")
PRECISIONS = ("fp16", "fp32")
DEFAULT_PRECISION = "fp16"  # what Core ML apps ship; fp32 on request
DEFAULT_TARGET = "iOS16"
# coremltools stamps the day of conversion into the model; mnc builds are reproducible instead.
_UNSTABLE_METADATA = ("com.github.apple.coremltools.conversion_date",)
# The coremltools passes mnc runs. mnc's IR arrives optimised (batch norm folded, activations
# fused), so coremltools' 95-pass default pipeline, which validates the whole program after each
# pass, would spend most of the build finding nothing to do. Only the fp16 conversion and the
# clean-up it needs remain. (The default pipeline also made the model inexact: it rewrites the
# input normalisation x·(1/std) − mean/std into batch_norm(variance=1, epsilon=1e-5), scaling every
# input by 1/√(1+1e-5); seen as a 1.9e-4 relative error at the output.)
_PASSES = ("common::dead_code_elimination",)


def _pipeline(ct, precision: str):
    return ct.PassPipeline(pass_names=list(_PASSES), pipeline_name="mnc")


@dataclass(frozen=True)
class CoreMLOptions:
    precision: str = DEFAULT_PRECISION
    deployment_target: str = DEFAULT_TARGET
    image_input: bool = False
    labels: tuple[str, ...] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    metadata: dict = field(default_factory=dict)  # author, license, version, short_description

    @property
    def int8_activations(self) -> bool:
        return self.deployment_target in ACTIVATION_INT8_TARGETS


def write(graph: Graph, path: Path, metadata: dict[str, str], options: CoreMLOptions) -> None:
    ct = coremltools()
    target = getattr(ct.target, options.deployment_target)
    (input_node,) = graph.inputs
    shape = (1, *graph.node(input_node).shape)
    program = _program(graph, shape, target, options)
    kwargs = {}
    if options.image_input:
        kwargs["inputs"] = [
            ct.ImageType(
                name=INPUT_NAME,
                shape=shape,
                scale=1 / 255.0,
                bias=[0.0] * shape[1],
                color_layout=ct.colorlayout.RGB if shape[1] == 3 else ct.colorlayout.GRAYSCALE,
            )
        ]
    if options.labels:
        kwargs["classifier_config"] = ct.ClassifierConfig(list(options.labels))
    precision = ct.precision.FLOAT32  # fp16 programs are fp16 already (see _typed_params)
    pipeline = _pipeline(ct, options.precision)
    with contextlib.redirect_stderr(io.StringIO()):  # coremltools' progress bars
        model = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=target,
            compute_precision=precision,
            pass_pipeline=pipeline,
            **kwargs,
        )
    spec = model.get_spec()
    for key in _UNSTABLE_METADATA:
        spec.description.metadata.userDefined.pop(key, None)
    meta = spec.description.metadata
    meta.shortDescription = options.metadata.get("short_description", "")
    meta.author = options.metadata.get("author", "")
    meta.license = options.metadata.get("license", "")
    meta.versionString = options.metadata.get("version", "")
    for key, value in metadata.items():
        meta.userDefined[key] = str(value)
    _describe_features(spec, graph, options)
    ct.utils.save_spec(spec, str(path), weights_dir=model.weights_dir)
    # save_spec serialises map fields (the metadata) in an unstable order; rewrite it stably.
    (Path(path) / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(spec.SerializeToString(deterministic=True))


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


def _program(graph: Graph, shape: tuple, target, options: CoreMLOptions):
    coremltools()  # the quiet import, before the builder's
    from coremltools.converters.mil import Builder as mb

    # MIL names the program input after this function's parameter: it must be INPUT_NAME.
    @mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=target)
    def program(input):  # noqa: A002
        x = input
        values = {}
        for name in graph.topo():
            data = graph.node(name)
            xs = [values[p] for p in graph.inputs_of(name)]
            if data.op == "input":
                values[name] = _normalise(mb, x, options) if options.image_input else x
                if options.precision == "fp16":
                    values[name] = mb.cast(x=values[name], dtype="fp16", name="input_fp16")
                values[name] = _quantised(mb, values[name], data, options, "input")
            else:
                op_name = _op_name(graph, name, options.precision, options.int8_activations)
                y = OPS[data.op](mb, op_name, _typed_params(data, options.precision), xs)
                values[name] = _quantised(mb, y, data, options, _safe(name))
        results = []
        for out, label in zip(graph.outputs, output_names(graph)):
            if options.precision == "fp16":
                results.append(mb.cast(x=values[out], dtype="fp32", name=label))
            elif options.int8_activations and graph.node(out).qparams:
                results.append(mb.identity(x=values[out], name=label))
            else:
                results.append(values[out])
        return results[0] if len(results) == 1 else tuple(results)

    return program


def _op_name(graph: Graph, name: str, precision: str, int8_activations: bool) -> str:
    """The MIL name of a node's op: the model's output name for the last one when it is the program's
    output as it stands, else the node's name; its constants are named after it (`…_weight`)."""
    quantised = int8_activations and graph.node(name).qparams is not None
    if name in graph.outputs and precision != "fp16" and not quantised:
        return output_names(graph)[graph.outputs.index(name)]
    return _safe(name)


def _typed_params(data: Node, precision: str) -> Node:
    """fp16 programs are built in fp16 directly (weights rounded to nearest), rather than left to
    coremltools' fp16 pass: the same program, without a pass pipeline re-validating it. A quantised
    node's bias is its int32 value dequantised."""
    params = dict(data.params)
    if data.qparams is not None and data.qparams.bias is not None:
        params["bias"] = data.qparams.bias.dequantized().astype(np.float32)
    if precision == "fp16":
        params = {k: v.astype(np.float16) for k, v in params.items()}
    return dataclasses.replace(data, params=params)


def _weight(mb, name: str, data: dict):
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


def _quantised(mb, x, data: dict, options: CoreMLOptions, name: str):
    """Round a tensor to its uint8 grid (int8 activations, iOS17+): quantize, then dequantize."""
    q = data.qparams
    if q is None or not options.int8_activations:
        return x
    from coremltools.converters.mil.mil import types

    scalar = np.float16 if x.dtype == types.fp16 else np.float32
    scale, zero_point = scalar(q.output.scale), np.uint8(q.output.zero_point)
    quantized = mb.quantize(input=x, scale=scale, zero_point=zero_point, output_dtype="uint8", name=name + "_q")
    return mb.dequantize(input=quantized, scale=scale, zero_point=zero_point, name=name + "_dq")


def _safe(name: str) -> str:
    return name.replace(".", "_")  # MIL names are identifiers


def _normalise(mb, pixels, options: CoreMLOptions):
    """Core ML scales image pixels by one number (1/255 here); the spec's per-channel mean and
    std are applied exactly by two ops of our own."""
    c = len(options.mean)
    std = np.asarray(options.std, dtype=np.float32).reshape(1, c, 1, 1)
    mean = np.asarray(options.mean, dtype=np.float32).reshape(1, c, 1, 1)
    x = mb.mul(x=pixels, y=(1.0 / std).astype(np.float32), name="input_inv_std")
    return mb.add(x=x, y=(-mean / std).astype(np.float32), name="input_normalised")


def _activation(mb, fn: str | None, x, name: str):
    return x if fn is None or fn == IDENTITY else ACTIVATIONS[fn](mb, x, name)


def _hard_sigmoid(mb, x, name: str):  # relu6(x + 3)/6 = clip(x/6 + 1/2, 0, 1)
    from coremltools.converters.mil.mil import types

    scalar = np.float16 if x.dtype == types.fp16 else np.float32  # MIL wants the type of x
    return mb.sigmoid_hard(x=x, alpha=scalar(1.0 / 6.0), beta=scalar(0.5), name=name)


ACTIVATIONS = {
    "relu": lambda mb, x, name: mb.relu(x=x, name=name),
    "relu6": lambda mb, x, name: mb.relu6(x=x, name=name),
    "sigmoid": lambda mb, x, name: mb.sigmoid(x=x, name=name),
    "hsigmoid": _hard_sigmoid,
    "hswish": lambda mb, x, name: mb.mul(x=x, y=_hard_sigmoid(mb, x, name + "_gate"), name=name),
    "identity": lambda mb, x, name: mb.identity(x=x, name=name),
}


def _conv(mb, name, data, xs):
    a, p = data.attrs, data.params
    top, left, bottom, right = a["pads"]
    y = mb.conv(
        x=xs[0],
        weight=_weight(mb, name, data),
        bias=_const(mb, p.get("bias"), name + "_bias"),
        strides=a["stride"],
        pad_type="custom",
        pad=[top, bottom, left, right],
        dilations=dilation(a),
        groups=a["groups"],
        name=name if not a.get("fused_act") else name + "_preact",
    )
    return _activation(mb, a.get("fused_act"), y, name)


def _fc(mb, name, data, xs):
    a, p = data.attrs, data.params
    y = mb.linear(
        x=xs[0],
        weight=_weight(mb, name, data),
        bias=_const(mb, p.get("bias"), name + "_bias"),
        name=name if not a.get("fused_act") else name + "_preact",
    )
    return _activation(mb, a.get("fused_act"), y, name)


def _const(mb, value, name: str):
    return None if value is None else mb.const(val=value, name=name)


def _batchnorm(mb, name, data, xs):
    p = data.params
    return mb.batch_norm(
        x=xs[0],
        mean=_const(mb, p["mean"], name + "_mean"),
        variance=_const(mb, p["var"], name + "_var"),
        gamma=_const(mb, p["gamma"], name + "_gamma"),
        beta=_const(mb, p["beta"], name + "_beta"),
        epsilon=float(data.attrs["eps"]),
        name=name,
    )


def _add(mb, name, data, xs):
    y = xs[0]
    for i, other in enumerate(xs[1:]):
        y = mb.add(x=y, y=other, name=name if i == len(xs) - 2 else f"{name}_{i}")
    return y


OPS = {
    "conv": _conv,
    "fc": _fc,
    "batchnorm": _batchnorm,
    "act": lambda mb, name, data, xs: ACTIVATIONS[data.attrs["fn"]](mb, xs[0], name),
    "add": _add,
    "mul": lambda mb, name, data, xs: mb.mul(x=xs[0], y=xs[1], name=name),
    "global_avgpool": lambda mb, name, data, xs: mb.reduce_mean(x=xs[0], axes=[2, 3], keep_dims=True, name=name),
    "flatten": lambda mb, name, data, xs: mb.reshape(x=xs[0], shape=[1, -1], name=name),
    "softmax": lambda mb, name, data, xs: mb.softmax(x=xs[0], axis=1, name=name),
    "avgpool": lambda mb, name, data, xs: mb.avg_pool(
        x=xs[0],
        kernel_sizes=data.attrs["kernel"],
        strides=data.attrs["stride"],
        pad_type="valid",
        name=name,
    ),
    # UNALIGN_CORNERS samples the input at (i + 0.5)·in/out − 0.5, clamped: half-pixel centres.
    "resize": lambda mb, name, data, xs: mb.resize_bilinear(
        x=xs[0],
        target_size_height=data.attrs["size"][0],
        target_size_width=data.attrs["size"][1],
        sampling_mode="UNALIGN_CORNERS",
        name=name,
    ),
    "concat": lambda mb, name, data, xs: mb.concat(values=xs, axis=1, name=name),
    "per_anchor": lambda mb, name, data, xs: mb.reshape(
        x=mb.transpose(x=xs[0], perm=[0, 2, 3, 1], name=name + "_nhwc"),
        shape=[1, -1, data.attrs["columns"]],
        name=name,
    ),
}


def run_simulated(artifact, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return run_coreml(artifact, feeds)


def run_native(artifact, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Core ML itself (macOS only), one sample at a time."""
    ct = coremltools()
    model = ct.models.MLModel(str(artifact))
    ((name, batch),) = feeds.items()
    spec = model.get_spec()
    image = spec.description.input[0].type.HasField("imageType")
    classify = spec.description.predictedProbabilitiesName
    names = [o.name for o in spec.description.output]
    outputs: list[list[np.ndarray]] = [[] for _ in names]
    for sample in batch:
        if image:
            from PIL import Image

            value = Image.fromarray(np.transpose(sample, (1, 2, 0)).astype(np.uint8).squeeze())
        else:
            value = sample[None]
        result = model.predict({name: value})
        if classify:
            scores = result[classify]
            outputs[0].append(np.asarray([scores[k] for k in _labels(artifact)], dtype=np.float32))
            continue
        for i, output in enumerate(names):  # the program's outputs, in order, each without the batch of one
            tensor = np.asarray(result[output], dtype=np.float32)
            outputs[i].append(tensor.reshape(tensor.shape[1:]))
    return [np.stack(o) for o in outputs if o]


def _labels(artifact) -> list:
    """The class labels in the order of the scores, as the package's classify op holds them."""
    program = CoreMLProgram(artifact)
    op = next(op for op in program.operations if op.type == "classify")
    return list(program.argument(op.inputs["classes"].arguments[0]))


CORE_ML_AVAILABLE = platform.system() == "Darwin"


class CoreMLTarget(Target):
    name = "coreml"
    suffix = ".mlpackage"
    choices = {
        "precision": Choice(PRECISIONS, DEFAULT_PRECISION),
        "deployment_target": Choice(DEPLOYMENT_TARGETS, DEFAULT_TARGET),
        "image_input": Choice(default=False),
        "labels": Choice(),
    }
    ops = OPS
    activations = ACTIVATIONS

    def make_options(self, values: dict, network: NetworkFacts) -> CoreMLOptions:
        labels = read_labels(values["labels"], network.classes) if values["labels"] else None
        return CoreMLOptions(
            precision=values["precision"],
            deployment_target=values["deployment_target"],
            image_input=values["image_input"],
            labels=labels,
            mean=tuple(network.mean),
            std=tuple(network.std),
            metadata=dict(network.description),
        )

    def record_fields(self, options: CoreMLOptions) -> dict:
        return {"precision": options.precision, "image_input": options.image_input}

    def report_fields(self, options: CoreMLOptions) -> dict:
        return {
            "precision": options.precision,
            "deployment_target": options.deployment_target,
            "image_input": options.image_input,
            "labels": len(options.labels or ()),
        }

    def int8_plan(self, options: CoreMLOptions) -> Int8Plan:
        if options.deployment_target not in WEIGHT_INT8_TARGETS:
            raise InputError(
                f"--quantize int8 for Core ML needs --deployment-target iOS16/macOS13 or later (int8 "
                f"weights; iOS17/macOS14 for int8 activations), not {options.deployment_target}"
            )
        if options.int8_activations:
            scheme = WEIGHTS_SCHEME + " and int8 activations (quantize/dequantize, uint8 per-tensor affine)"
        else:
            scheme = WEIGHTS_SCHEME + "; activations in float"
        return Int8Plan(weight_bits=WEIGHT_BITS, activations=options.int8_activations, scheme=scheme)

    def write(self, graph: Graph, path: Path, record: ArtifactRecord, options: CoreMLOptions) -> None:
        write(graph, path, record.to_metadata(), options)

    def read_metadata(self, path: Path) -> dict[str, str]:
        try:
            spec = load_spec(path)
        except Exception as exc:  # coremltools raises several types for a broken package
            raise InputError(f"'{path}' is not a readable Core ML package ({type(exc).__name__}: {exc})") from None
        return dict(spec.description.metadata.userDefined)

    def constants(self, path: Path) -> dict[str, np.ndarray]:
        """Every weight the saved package holds, read back by mnc's executor (fp16 values widened)."""
        return CoreMLProgram(path).constants

    def expected_constants(self, graph: Graph, record: ArtifactRecord) -> dict[str, np.ndarray]:
        """What each layer's constants must be: its parameters in the program's precision; int8
        weights as Core ML dequantises them when it loads the model."""
        precision = record.precision or DEFAULT_PRECISION
        dtype = np.float16 if precision == "fp16" else np.float32
        int8_activations = bool(record.int8_activations)
        expected = {}
        for name in graph.topo():
            node = _typed_params(graph.node(name), precision)
            op_name = _op_name(graph, name, precision, int8_activations)
            for key, value in node.params.items():
                expected[f"{op_name}_{key}"] = value.astype(np.float32)
            q = node.qparams.weight if node.qparams is not None else None
            if q is not None:
                scale = q.scale.astype(dtype).astype(np.float32).reshape(-1, *[1] * (q.q.ndim - 1))
                expected[f"{op_name}_weight"] = (q.q.astype(np.float32) * scale).astype(np.float32)
        return expected

    def int8_checks(self, artifact: Path, quantized: Graph, feed: np.ndarray, output: np.ndarray) -> list[Check]:
        """With int8 activations, every layer against the fake-quant reference of that layer, fed the
        values mnc's executor computed from the saved package (float arithmetic between quantize and
        dequantize, which rounds once more or less than the reference near a grid boundary). With
        int8 weights alone nothing is rounded to a grid: the whole network is compared."""
        program = CoreMLProgram(artifact)
        names = {n: ("input" if n in quantized.inputs else _safe(n)) + "_dq" for n in quantized.topo()}
        if not any(op.type == "quantize" for op in program.operations):
            return []
        (input_name,) = program.inputs
        runs = [program.run({input_name: sample[None]}) for sample in feed]
        missing = [n for n, v in names.items() if v not in runs[0]]
        if missing:
            return [
                Check(
                    "layers",
                    {"error": f"no quantised value for {missing[0]}"},
                    False,
                    f"layer '{missing[0]}' has no quantised value in the package",
                )
            ]

        def real(name: str) -> np.ndarray:
            return np.concatenate(
                [np.asarray(env[names[name]], dtype=np.float64).reshape(1, -1) for env in runs]
            ).reshape(len(runs), *quantized.node(name).shape)

        last = np.concatenate([real(o).reshape(len(runs), -1) for o in quantized.outputs], axis=1)
        if not np.array_equal(last, np.asarray(output, np.float64).reshape(len(runs), -1)):
            failure = "the executor's output is not the one of the run checked layer by layer"
            return [Check("layers", {"verdict": "fail", "error": failure}, False, failure)]
        executor = "mnc Core ML executor (reads the saved package), every dequantised tensor"
        return [layer_by_layer(quantized, real, executor, LAYER_LSB_BOUND)]

    def fp16_layers(self, artifact: Path, emitted: Graph, feed: np.ndarray) -> tuple[Graph, dict] | None:
        """An fp16 program rounds every op's result, and all its constants, to float16: the values
        mnc's executor computes from the saved package for each node, on the first samples."""
        program = CoreMLProgram(artifact)
        if "input_fp16" not in {op.outputs[0].name for op in program.operations}:
            return None  # an fp32 program
        (input_name,) = program.inputs
        runs = [program.run({input_name: sample[None]}) for sample in feed[:FP16_LAYER_SAMPLES]]
        values = {}
        for name in emitted.topo():
            value = "input_fp16" if name in emitted.inputs else _safe(name)
            shape = emitted.node(name).shape
            values[name] = np.concatenate([np.asarray(env[value], dtype=np.float64).reshape(1, *shape) for env in runs])
        rounded = emitted.copy()
        for name in rounded:
            rounded.node(name).params = dict(_typed_params(rounded.node(name), "fp16").params)
        return rounded, values

    def executors(self) -> list[Executor]:
        simulated = Executor(
            "mnc Core ML executor (numpy, reads the saved package, fp16 emulated); simulated: "
            "Core ML runtime not available on this host",
            run_simulated,
            split_samples=True,
        )
        return [simulated] + ([Executor("Core ML (MLModel.predict)", run_native)] if CORE_ML_AVAILABLE else [])

    def timer(self, path: Path, threads: int) -> Timer:
        """Core ML itself (MLModel.predict, every compute unit), on macOS only: mnc's executor on
        Linux says nothing of a device's speed. Core ML chooses its own threads."""
        if not CORE_ML_AVAILABLE:
            raise InputError(
                f"'{path}': timing a Core ML package needs macOS, where Core ML runs; on Linux mnc verifies "
                "packages with its own executor, whose speed says nothing of a device's"
            )
        ct = coremltools()
        model = ct.models.MLModel(str(path))
        (described,) = model.get_spec().description.input
        if described.type.HasField("imageType"):
            from PIL import Image

            t = described.type.imageType
            value = Image.fromarray(timing_input((t.height, t.width, 3), np.uint8))
        else:
            value = timing_input([1, *list(described.type.multiArrayType.shape)[1:]], np.float32)
        feed = {described.name: value}
        return Timer(f"Core ML (coremltools {ct.__version__}, MLModel.predict)", lambda: model.predict(feed))


TARGET = CoreMLTarget()
