"""Run a saved artifact: the backend executors verification uses, keyed by target."""
from __future__ import annotations

import numpy as np


def run_onnx(artifact: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # All graph optimisations on: verify what a user's ONNX Runtime will actually execute.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


EXECUTORS = {"onnx": ("ONNX Runtime (CPUExecutionProvider, all graph optimisations)", run_onnx)}
