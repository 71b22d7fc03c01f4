"""Run a saved artifact: the backend executors verification uses, keyed by target.

Each takes the artifact's path and a {input name: batch} feed, and returns [output batch]."""
from __future__ import annotations

import platform

import numpy as np


def run_onnx(artifact, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # All graph optimisations on: verify what a user's ONNX Runtime will actually execute.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads spin by default, taking the core the rest of the compile needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = artifact if isinstance(artifact, bytes) else str(artifact)
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_coreml_simulated(artifact, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from mnc.verify.coreml_exec import run_coreml

    return run_coreml(artifact, feeds)


def run_coreml_native(artifact, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Core ML itself (macOS only), one sample at a time."""
    from mnc.backends.coreml import coremltools

    ct = coremltools()
    model = ct.models.MLModel(str(artifact))
    (name, batch), = feeds.items()
    spec = model.get_spec()
    image = spec.description.input[0].type.HasField("imageType")
    classify = spec.description.predictedProbabilitiesName
    outputs = []
    for sample in batch:
        if image:
            from PIL import Image

            value = Image.fromarray(np.transpose(sample, (1, 2, 0)).astype(np.uint8).squeeze())
        else:
            value = sample[None]
        result = model.predict({name: value})
        if classify:
            scores = result[classify]
            outputs.append(np.asarray([scores[k] for k in _labels(artifact)], dtype=np.float32))
        else:
            outputs.append(np.asarray(next(iter(result.values())), dtype=np.float32).reshape(-1))
    return [np.stack(outputs)]


def _labels(artifact) -> list:
    """The class labels in the order of the scores, as the package's classify op holds them."""
    from mnc.verify.coreml_exec import CoreMLProgram

    program = CoreMLProgram(artifact)
    op = next(op for op in program.operations if op.type == "classify")
    return list(program.argument(op.inputs["classes"].arguments[0]))


CORE_ML_AVAILABLE = platform.system() == "Darwin"

EXECUTORS = {
    "onnx": ("ONNX Runtime (CPUExecutionProvider, all graph optimisations)", run_onnx),
    "coreml": ("mnc Core ML executor (numpy, reads the saved package, fp16 emulated); simulated: Core ML "
               "runtime not available on this host", run_coreml_simulated),
}
# Single-threaded executors whose samples may run in parallel processes.
SPLIT_SAMPLES = {run_coreml_simulated}
NATIVE = {"coreml": ("Core ML (MLModel.predict)", run_coreml_native)} if CORE_ML_AVAILABLE else {}
