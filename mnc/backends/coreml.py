"""The Core ML target: IR → an ML Program (.mlpackage, mnc/backends/coreml_lowering.py), run by mnc's
executor of saved packages (mnc/backends/coreml_exec.py) and, on macOS, by Core ML itself.

mnc writes and reads packages without coremltools (slow to import); it is imported only to run a
package with Core ML on macOS.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import numpy as np

from mnc.artifact import ArtifactRecord
from mnc.backends.coreml_exec import CoreMLProgram, run_coreml
from mnc.backends.coreml_lowering import (
    ACTIVATION_INT8_TARGETS,
    DEFAULT_PRECISION,
    DEFAULT_TARGET,
    DEPLOYMENT_TARGETS,
    FP16_INPUT,
    IMAGE_VALUE,
    LOWERING,
    PRECISIONS,
    CoreMLOptions,
    mil_name,
    mil_op_name,
    node_precision,
    typed_params,
    write,
)
from mnc.backends.coreml_mil import proto, read_package
from mnc.backends.lowering import Lowering
from mnc.backends.target import (
    Check,
    Choice,
    Executor,
    Int8Plan,
    NetworkFacts,
    Target,
    Timer,
    layer_by_layer,
    read_labels,
    timing_input,
)
from mnc.errors import InputError, param
from mnc.ir.graph import Graph
from mnc.ir.ops.affine import channels
from mnc.ir.ops.graph_input import pixel_scale

WEIGHT_BITS = 8  # Core ML's int8 kernels have no int16 pair sums to saturate
# Between quantize and dequantize Core ML computes in float, and rounds the result to the grid once:
# fed the same inputs, a layer differs from the reference by at most one step, where float32's
# rounding of the sum puts a value on the other side of a grid boundary.
LAYER_LSB_BOUND = 1.0
WEIGHT_INT8_TARGETS = ("iOS16", "macOS13", *ACTIVATION_INT8_TARGETS)
WEIGHTS_SCHEME = "int8 weights (constexpr_affine_dequantize, per-output-channel symmetric)"


def coremltools():
    """Import coremltools quietly: on Linux it logs that its prediction runtime is missing."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct

    return ct


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

    # Core ML's image type hands the pixels over divided by 255; the normalisation's constants have
    # always been computed in float32 here (and an artifact's bytes must not change).
    image_input_rewrite = {"pixel_max": 1.0, "arithmetic": "float32"}

    def lowering(self) -> Lowering:
        return LOWERING

    def make_options(self, values: dict, network: NetworkFacts) -> CoreMLOptions:
        labels = read_labels(values["labels"], network.classes) if values["labels"] else None
        return CoreMLOptions(
            precision=values["precision"],
            deployment_target=values["deployment_target"],
            image_input=values["image_input"],
            labels=labels,
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
                f"{param('quantize', 'int8')} for Core ML needs {param('deployment_target', 'iOS16')}/macOS13 or "
                "later (int8 "
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
            spec = read_package(path)
        except Exception as exc:  # a missing file, broken JSON or protobuf: each its own type
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
            node_in = node_precision(graph, name, precision)
            node = typed_params(graph.node(name), node_in)
            op_name = mil_op_name(graph, name, precision, int8_activations)
            op_name += f"_{node_in}" if node_in != precision else ""  # its result is cast: coreml_lowering._each_node
            for key, value in node.params.items():
                stored = channels(value, len(node.shape) + 1) if node.op == "affine" else value  # see _affine
                expected[f"{op_name}_{key}"] = stored.astype(np.float32)
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
        names = {
            n: ("input" if n in quantized.inputs else mil_name(n)) + "_dq"
            for n in quantized.topo()
            if quantized.node(n).qparams is not None
        }
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
        mnc's executor computes from the saved package for each node, on every sample."""
        program = CoreMLProgram(artifact)
        half = proto().MIL_pb2.DataType.Value("FLOAT16")
        if not any(op.type == "cast" and op.outputs[0].type.tensorType.dataType == half for op in program.operations):
            return None  # an fp32 program
        (input_name,) = program.inputs
        runs = [program.run({input_name: sample[None]}) for sample in feed]
        values = {}
        for name in emitted.topo():
            if name in emitted.inputs:  # an image as its image type gives it, else the float input cast
                value = IMAGE_VALUE if pixel_scale(emitted.node(name).attrs) is not None else FP16_INPUT
            else:
                value = mil_name(name)
            shape = emitted.node(name).shape
            # float32 holding float16 values, as the executor keeps them: widened to float64 layer by layer
            values[name] = np.concatenate([np.asarray(env[value], dtype=np.float32).reshape(1, *shape) for env in runs])
        rounded = emitted.copy()
        for name in rounded:
            precision = node_precision(rounded, name, "fp16")
            rounded.node(name).params = dict(typed_params(rounded.node(name), precision).params)
        return rounded, values

    def executors(self) -> list[Executor]:
        simulated = Executor(
            "mnc Core ML executor (numpy, reads the saved package, each value in the type the program gives it: "
            "float16 where it says fp16); simulated: "
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
