"""The TFLite target: IR → a LiteRT flatbuffer, run by the LiteRT interpreter. This module is light:
the flatbuffer schema is imported when a model is written or read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnc.artifact import ArtifactRecord
from mnc.backends.lowering import Lowering
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
    read_labels,
    timing_input,
)
from mnc.backends.tflite.litert import in_child, quantization, quiet_native_stderr, run_litert, run_litert_reference
from mnc.backends.tflite.options import FUSED_ACTIVATIONS, PRECISIONS, TFLiteOptions
from mnc.backends.tflite.resize import resize_allowance
from mnc.errors import InputError, param
from mnc.ir.graph import Graph
from mnc.ir.ops import OPS
from mnc.ir.roundoff import float16_rounded

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


def has_weight_tensor(op: str) -> bool:
    """The ops whose weights (and biases) TFLite holds as tensors of their own: conv and fc."""
    return "weight" in OPS[op].slots


class TFLiteTarget(Target):
    name = "tflite"
    suffix = ".tflite"
    choices = {
        "precision": Choice(PRECISIONS, "fp32"),
        "image_input": Choice(default=False),
        "labels": Choice(),
    }
    fused_activations = FUSED_ACTIVATIONS

    def lowering(self) -> Lowering:
        from mnc.backends.tflite.lowering import LOWERING

        return LOWERING

    def layout(self, shape: tuple[int, ...]) -> list[int]:
        from mnc.backends.tflite.flatbuffer import nhwc

        return nhwc(shape)[1:]

    def make_options(self, values: dict, network: NetworkFacts) -> TFLiteOptions:
        labels = read_labels(values["labels"], network.classes) if values["labels"] else None
        return TFLiteOptions(
            precision=values["precision"],
            image_input=values["image_input"],
            labels=labels,
            description=network.description.get("short_description", ""),
        )

    def int8_plan(self, options: TFLiteOptions) -> Int8Plan:
        if options.precision != "fp32":
            raise InputError(
                f"{param('quantize', 'int8')} with {param('precision', options.precision)}: "
                "int8 models keep int8 weights"
            )
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

    def rewrites(self, record: ArtifactRecord, network: NetworkFacts) -> list[tuple[str, dict]]:
        """TFLite has no hard sigmoid: it is written as affine maps (ADD with a fused RELU6, then MUL)."""
        return [*super().rewrites(record, network), ("hard_sigmoid", {})]

    def write(self, graph: Graph, path: Path, record: ArtifactRecord, options: TFLiteOptions) -> None:
        from mnc.backends.tflite.model import build_model

        Path(path).write_bytes(build_model(graph, record.to_metadata(), options))

    def read_metadata(self, path: Path) -> dict[str, str]:
        from mnc.backends.tflite.flatbuffer import read_model, text

        try:
            model = read_model(path)
        except Exception as exc:  # the flatbuffer reader raises several types for corrupt input
            raise InputError(f"'{path}' is not a readable TFLite model ({type(exc).__name__}: {exc})") from None
        return {text(m.name): text(model.buffers[m.buffer].data) for m in model.metadata or []}

    def int8_checks(self, artifact: Path, quantized: Graph, feed: np.ndarray, output: np.ndarray) -> list[Check]:
        """Every layer against the fake-quant reference of that layer, fed the artifact's own int8
        inputs (the reference kernels', in a child process): a wrong weight, scale or layout shows
        at its layer, and rounding differences cannot compound through the depth of the network."""

        try:
            found = in_child("tensors", artifact, feed)
        except RuntimeError as exc:
            return [Check("layers", {"error": str(exc)}, False, str(exc))]
        tensors = {k.rsplit("|", 2)[0]: (v, *quantization(k)) for k, v in found.items()}

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
        from mnc.backends.tflite.flatbuffer import NUMPY_TYPES, read_model, text

        model = read_model(path)
        found = {}
        for t in model.subgraphs[0].tensors:
            data = model.buffers[t.buffer].data if t.buffer else None
            if data is not None and t.type in NUMPY_TYPES:
                found[text(t.name)] = np.frombuffer(np.asarray(data, np.uint8).tobytes(), NUMPY_TYPES[t.type]).reshape(
                    list(t.shape)
                )
        return found

    def expected_constants(self, graph: Graph, record: ArtifactRecord) -> dict[str, np.ndarray]:
        """Each conv/fc's weights and bias in TFLite's layout: float32, float16 in an fp16 model, or
        the int8 weights and int32 biases of an int8 one."""
        from mnc.backends.tflite.lowering import weight_layout

        half = (record.precision or "fp32") == "fp16"
        expected = {}
        for name in graph.topo():
            node = graph.node(name)
            if not has_weight_tensor(node.op):
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
            if has_weight_tensor(node.op):
                for key in ("weight", "bias"):
                    if key in node.params:
                        node.params[key] = float16_rounded(node.params[key].astype(np.float32))
        return graph

    def executors(self) -> list[Executor]:
        return [
            Executor("LiteRT interpreter (default kernels, XNNPACK)", run_litert),
            Executor(
                "LiteRT interpreter (reference kernels, in a child process)", run_litert_reference, own_process=True
            ),
        ]

    def timer(self, path: Path, threads: int) -> Timer:
        """LiteRT with its default op resolver (XNNPACK), as an app runs the model."""
        from importlib.metadata import version

        from ai_edge_litert.interpreter import Interpreter

        try:
            with quiet_native_stderr():
                interpreter = Interpreter(model_path=str(path), num_threads=threads)
                interpreter.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for a file it cannot load
            raise InputError(f"'{path}' cannot be loaded by LiteRT ({type(exc).__name__}: {exc})") from None
        (inp,) = interpreter.get_input_details()
        interpreter.set_tensor(inp["index"], timing_input(list(inp["shape"]), inp["dtype"]))
        return Timer(f"LiteRT {version('ai-edge-litert')} (default op resolver, XNNPACK)", interpreter.invoke)


TARGET = TFLiteTarget()
