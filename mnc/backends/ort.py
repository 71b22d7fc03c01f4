"""The ONNX Runtime Mobile target: mnc's ONNX model converted to the ORT format by ONNX Runtime
itself, as its own `convert_onnx_models_to_ort` tool does for ARM (`session.qdqisint8allowed`, no
x86-only NCHWc layout), with the operator config a reduced-size ONNX Runtime build needs beside it.
The model is ONNX's mobile form, for the phone's accelerators (NNAPI, Core ML): a fixed batch (1
unless `--batch` says otherwise) and operators those providers list (`onnx.MOBILE_LOWERING`).

Reproducible bytes: ONNX Runtime creates its kernel-type resolver's entries in the order of a hash
map seeded from a memory address, so where they lie in the file changes with the converting
process's address layout, which the path of the install, the environment and address-space
randomisation move. What it writes is therefore rewritten in one canonical order and layout
(`ort_canonical.py`): the same model gives the same bytes on every install, in any folder, from any
caller. Where the rewrite cannot be made without loss (a field this mnc does not know, from another
ONNX Runtime), ONNX Runtime's file is kept as written and the report says the bytes vary.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mnc.artifact import ArtifactRecord
from mnc.backends import onnx as onnx_target
from mnc.backends import onnx_int8, ort_canonical
from mnc.backends.lowering import Lowering
from mnc.backends.onnx_runtime import run_session
from mnc.backends.target import Check, Choice, Executor, Int8Plan, NetworkFacts, Target, Timer, fixed_batch, joined
from mnc.errors import InputError
from mnc.host import saturating_int8_x86
from mnc.io import output_error
from mnc.ir.graph import Graph
from mnc.quant.scheme import weight_qmax

# The model is mnc's ONNX model in its mobile form, converted: ONNX's mobile lowering (operators NNAPI
# and Core ML take), refusing under this target's name.
LOWERING = dataclasses.replace(onnx_target.MOBILE_LOWERING, target="ort")
DEFAULT_BATCH = "1"  # the mobile artifact: NNAPI and Core ML take only fixed shapes
CONFIG_SUFFIX = ".required_operators.config"
WEIGHT_BITS = 8  # ARM's int8 kernels widen before they accumulate: nothing to saturate on the phone
INT8_SCHEME = (
    "QDQ converted to the ORT format for ARM: activations uint8 per-tensor affine; weights int8 "
    f"per-output-channel symmetric in [-{weight_qmax(WEIGHT_BITS)}, {weight_qmax(WEIGHT_BITS)}] (8-bit); bias "
    "int32 with scale input_scale·weight_scale"
)
# ONNX's TensorProto data types (which the ORT format keeps) of the constants mnc emits.
_ORT_TENSOR_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 10: np.float16}
_CONVERT = """
import sys
import onnxruntime as ort
source, target, exact_x64 = sys.argv[1:4]
so = ort.SessionOptions()
so.optimized_model_filepath = target
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
so.intra_op_num_threads = 1
so.log_severity_level = 3
so.add_session_config_entry("session.save_model_format", "ORT")
so.add_session_config_entry("session.qdqisint8allowed", "1")  # the model is for ARM
if exact_x64 == "1":
    so.add_session_config_entry("session.x64quantprecision", "1")
ort.InferenceSession(source, so, providers=["CPUExecutionProvider"], disabled_optimizers=["NchwcTransformer"])
"""


def converted_by_onnx_runtime(onnx_path: Path, *, exact_x64: bool = False) -> bytes:
    """The ORT format file exactly as ONNX Runtime writes it, converted in a child process (a
    native crash of its optimiser fails the conversion, not mnc); see `convert`."""
    with tempfile.TemporaryDirectory(prefix="mnc-ort-") as work:
        done = subprocess.run(
            [sys.executable, "-c", _CONVERT, str(Path(onnx_path).resolve()), "model.ort", "1" if exact_x64 else "0"],
            cwd=work,  # nothing in the caller's folder shadows onnxruntime
            capture_output=True,
            text=True,
        )
        if done.returncode == 0:
            return Path(work, "model.ort").read_bytes()
    why = done.stderr.strip()[-500:]
    if "Failed to save" in why or "No space" in why:
        raise InputError(f"ONNX Runtime could not save the converted model in a temporary folder: {why}")
    raise RuntimeError(f"ONNX Runtime could not convert the model: {why}")


def convert(onnx_path: Path, ort_path: Path, *, exact_x64: bool = False) -> str | None:
    """ONNX → ORT format, written in its canonical order and layout (`ort_canonical.canonical`).
    Returns None when it was, else why the bytes are ONNX Runtime's as written (and may vary).

    `exact_x64`: for verification only, never an artifact: an x86 host without VNNI runs the ORT
    format's int8 convolutions with u8×s8 kernels that saturate pairs of products at 16 bits, which
    the phone's do not. ONNX Runtime's x64 precision path (int8 weights shifted to uint8, u8×u8
    kernels) avoids that, but it is a graph rewrite that an ORT-format model only gets when it is
    converted: the session option has no effect when the .ort is loaded."""
    data = converted_by_onnx_runtime(onnx_path, exact_x64=exact_x64)
    try:
        data, why_not = ort_canonical.canonical(data), None
    except ort_canonical.NotCanonical as exc:
        why_not = f"this ONNX Runtime's file cannot be rewritten canonically ({exc})"
    try:
        Path(ort_path).write_bytes(data)
    except OSError as exc:
        raise output_error(ort_path, exc) from None
    return why_not


def operator_config(ort_path: Path) -> bytes:
    """The operator config of a reduced-size ONNX Runtime build that runs this model, as ONNX
    Runtime's `create_config_from_models` writes it (without type reduction), less the comment line
    that names the model's path: the file stays free of where it was built."""
    required = ort_canonical.required_operators(ort_canonical.read(Path(ort_path).read_bytes(), whole=False))
    lines = ["# Generated from model/s:"] + [
        f"{domain};{opset};{','.join(sorted(required[domain][opset]))}"
        for domain in sorted(required)
        for opset in sorted(required[domain])
    ]
    (config,) = TARGET.companions(ort_path)
    data = ("\n".join(lines) + "\n").encode()
    config.write_bytes(data)
    return data


def run_ort(artifact, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run the .ort file in ONNX Runtime, as an app would (all optimisations). On an x86 host without
    VNNI its int8 convolutions saturate where the phone's do not (see `convert`): the layer check
    runs a twin converted with exact_x64 instead."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No effect on a loaded .ort in ONNX Runtime 1.32 (see `convert`); harmless where a runtime applies it.
    options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
    return run_session(session, feeds)


# Where the .ort itself runs with kernels that saturate, the whole-network figures are this host's: the
# report says so (the layer check above is the same on every host).
_SATURATING_HOST = Check(
    "host_int8_kernels",
    {
        "saturating": True,
        "note": "this x86 host has no VNNI: ONNX Runtime ran the .ort's int8 convolutions with u8×s8 kernels "
        "that add pairs of products in 16 bits and saturate, which a phone's ARM kernels and a VNNI host's do "
        "not; the whole-network figures are this host's, the layer check is host-independent",
    },
    True,
    "",
    "note: this x86 host has no VNNI: the .ort's whole-network int8 figures are from ONNX Runtime's "
    "saturating u8×s8 kernels here, not a phone's; the layer check is host-independent",
)


class OrtTarget(Target):
    name = "ort"
    suffix = ".ort"
    # Its operators are always the mobile form's: --mobile-ops is taken, and changes nothing.
    choices = {"batch": Choice(default=DEFAULT_BATCH), "mobile_ops": Choice(default=True)}

    def lowering(self) -> Lowering:
        return LOWERING

    def make_options(self, values: dict, network: NetworkFacts) -> dict:
        return {
            "short_description": network.description.get("short_description", ""),
            "batch": fixed_batch(values["batch"]),
            "mobile_ops": True,
        }

    def record_fields(self, options) -> dict:
        return {"batch": options["batch"], "mobile_ops": True}

    def source_model(self, graph: Graph, record: ArtifactRecord, options: dict) -> bytes:
        """The ONNX model the .ort is converted from (ONNX Runtime's mobile usability checker reads this)."""
        description = options.get("short_description", "")
        return onnx_target.emit(graph, record.to_metadata(), description, lowering=LOWERING, batch=options["batch"])

    def int8_plan(self, options) -> Int8Plan:
        return Int8Plan(weight_bits=WEIGHT_BITS, activations=True, scheme=INT8_SCHEME)

    def int8_checks(self, artifact: Path, quantized: Graph, feed: np.ndarray, output: np.ndarray) -> list[Check]:
        """Every layer against the fake-quant reference of that layer. An .ort file offers no way to
        read its inner tensors, so the same model with them as outputs is converted the same way and
        run the same way: its output must equal the artifact's bit for bit (on any host: the same
        kernels, saturating or not). Its tensors are then taken from the same twin converted with the
        x64 precision path, whose arithmetic is exact on every host (on a host whose kernels cannot
        saturate it computes the same values), so the verdict does not depend on the CPU. The twin has
        the artifact's operators and batch, as its record says (an .ort from before the mobile form has
        neither in its record: ONNX's own operators, a symbolic batch)."""
        record = ArtifactRecord.from_metadata(self.read_metadata(artifact), str(artifact))
        mobile = record is not None and record.mobile_ops
        lowering = LOWERING if mobile else dataclasses.replace(onnx_target.LOWERING, target=self.name)
        model = onnx_target.build_model(quantized, {}, lowering=lowering, batch=record.batch if record else None)
        twin, names = onnx_int8.instrumented(model, quantized)
        feeds = {onnx_target.INPUT_NAME: feed}
        with tempfile.TemporaryDirectory(prefix="mnc-ort-layers-") as work:
            source, converted, exact = Path(work, "twin.onnx"), Path(work, "twin.ort"), Path(work, "exact.ort")
            source.write_bytes(twin.SerializeToString())
            convert(source, converted)
            as_converted = run_ort(converted, feeds)
            if not np.array_equal(joined(as_converted[: len(quantized.outputs)]), output):
                return [onnx_int8.layers_check(quantized, names, as_converted, output)]  # reports the mismatch
            convert(source, exact, exact_x64=True)
            results = run_ort(exact, feeds)
        executor = (
            "ONNX Runtime (ORT format; the twin converted with the x64 precision path, so no host's kernels "
            "saturate), every uint8 tensor"
        )
        exact_output = joined(results[: len(quantized.outputs)])
        checks = [onnx_int8.layers_check(quantized, names, results, exact_output, executor)]
        if saturating_int8_x86():
            checks.append(_SATURATING_HOST)
        return checks

    def companions(self, artifact: Path) -> list[Path]:
        return [artifact.with_name(artifact.name[: -len(self.suffix)] + CONFIG_SUFFIX)]

    def write(self, graph: Graph, path: Path, record: ArtifactRecord, options: dict) -> dict:
        path = Path(path)
        source = path.with_name(path.name + ".source.onnx")
        source.write_bytes(self.source_model(graph, record, options))
        try:
            why_not = convert(source, path)
        finally:
            source.unlink(missing_ok=True)
        operator_config(path)
        why = (
            "ONNX Runtime's file rewritten in a canonical order and layout"
            if why_not is None
            else (
                f"no: {why_not}; ONNX Runtime lays out its kernel-type resolver in the order of a hash seeded "
                "from a memory address"
            )
        )
        return {"reproducible_bytes": why_not is None, "reproducibility": why}

    def report_fields(self, options) -> dict:
        return {
            "format": "ORT (flatbuffers), converted for ARM (session.qdqisint8allowed=1, no NCHWc layout)",
            "operator_config": f"beside the model: <name>{CONFIG_SUFFIX}",
            **onnx_target.batch_fields(options),
        }

    def read_metadata(self, path: Path) -> dict[str, str]:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises several types for a corrupt model
            raise InputError(f"'{path}' is not a readable ORT format model ({type(exc).__name__})") from None
        return dict(session.get_modelmeta().custom_metadata_map)

    def timer(self, path: Path, threads: int) -> Timer:
        return onnx_target.ort_timer(path, threads)

    # ONNX Runtime's optimiser, which wrote the file, folds bias scales into QLinearConv and keeps one
    # copy of equal scalar activation scales: those may be absent. Every weight, bias and weight scale
    # must be there as emitted.
    foldable_constants = (".bias_scale", ".bias_zero_point", ".out_scale", ".out_zero_point")

    def constants(self, path: Path) -> dict[str, np.ndarray]:
        """The initialisers of the .ort file (the ORT format's flatbuffer, read with ONNX Runtime's
        own schema classes)."""
        from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

        graph = InferenceSession.InferenceSession.GetRootAs(Path(path).read_bytes(), 0).Model().Graph()
        found = {}
        for i in range(graph.InitializersLength()):
            t = graph.Initializers(i)
            dtype = _ORT_TENSOR_TYPES.get(t.DataType())
            if dtype is not None and not t.RawDataIsNone():
                shape = [t.Dims(j) for j in range(t.DimsLength())]
                found[t.Name().decode()] = np.frombuffer(t.RawDataAsNumpy().tobytes(), dtype).reshape(shape)
        return found

    def expected_constants(self, graph: Graph, record: ArtifactRecord) -> dict[str, np.ndarray]:
        return onnx_target.expected_initializers(graph)

    def executors(self) -> list[Executor]:
        return [Executor("ONNX Runtime (CPUExecutionProvider, ORT format, x64 quantisation precision)", run_ort)]


TARGET = OrtTarget()
