"""The reference an artifact is checked against: the fp32, unoptimised graph, run by ONNX Runtime
with its own graph optimisations off; itself checked against mnc's float64 numpy interpreter."""

from __future__ import annotations

import numpy as np

from mnc.backends.target import joined
from mnc.ir.graph import Graph
from mnc.verification.bounds import FLOAT32, RoundingVariance

DESCRIPTION = "unoptimised fp32 IR exported to ONNX, run by ONNX Runtime with graph optimisations disabled"
CHECK_DESCRIPTION = "mnc numpy interpreter (float64) on the unoptimised IR"


def reference_outputs(graph: Graph, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ONNX Runtime reference, float64 interpreter result, the variance of a float32 evaluation's
    rounding error in each output element) for the unoptimised graph (mnc/verification/bounds.py).
    Each sample is evaluated on its own: a matrix product's rounding depends on how many rows it
    multiplies at once, and the reference must not depend on how samples are grouped (in one
    process, or split across two: start_reference)."""
    import onnxruntime as ort

    from mnc.backends import onnx as onnx_backend

    model = onnx_backend.emit(graph, {})
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    # It runs beside the backend: idle intra-op threads must not spin on the core the backend needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    results = []
    for sample in np.split(images, len(images)):
        reference = joined(session.run(None, {onnx_backend.INPUT_NAME: sample}))
        model = RoundingVariance(graph, FLOAT32)
        interpreted = joined(model.run({graph.inputs[0]: sample}).values())
        results.append((reference, interpreted, joined(model.variances[o] for o in graph.outputs)))
    return joined_samples(results)


def joined_samples(results) -> tuple[np.ndarray, ...]:
    """Per-sample (or per-group) results, each a tuple of arrays, as one tuple of whole-batch arrays."""
    return tuple(np.concatenate(arrays) for arrays in zip(*results))
