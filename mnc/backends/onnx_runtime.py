"""ONNX Runtime running an ONNX or .ort model: for verification (every graph optimisation on, or
off for the reference) and for timing, as an app runs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnc.backends.target import Timer, timing_input
from mnc.errors import InputError


def run_onnx(artifact, feeds: dict[str, np.ndarray], *, optimise: bool = True) -> list[np.ndarray]:
    """Run a model (a path or its bytes) with ONNX Runtime's CPU provider. With optimise (the default),
    all graph optimisations on: what a user's ONNX Runtime will actually execute."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    # Idle intra-op threads spin by default, taking the core the rest of the compile needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = artifact if isinstance(artifact, bytes) else str(artifact)
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    types = {i.name: _ORT_DTYPES.get(i.type, np.float32) for i in session.get_inputs()}
    return run_session(session, {k: np.asarray(v, dtype=types.get(k, np.float32)) for k, v in feeds.items()})


def run_session(session, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A session run on every sample of the feeds. A model whose batch is fixed (`--batch N`, the mobile
    form) takes exactly N samples a run: the samples go in N at a time, the last group filled up with
    copies of its last sample, whose outputs are dropped. Every run of an ONNX or .ort model in
    verification comes here."""
    batch = session.get_inputs()[0].shape[0]
    samples = len(next(iter(feeds.values())))
    if not isinstance(batch, int) or samples == batch:
        return session.run(None, feeds)
    parts = []
    for start in range(0, samples, batch):
        group = {k: v[start : start + batch] for k, v in feeds.items()}
        taken = len(next(iter(group.values())))
        if taken < batch:
            group = {k: np.concatenate([v, np.repeat(v[-1:], batch - taken, axis=0)]) for k, v in group.items()}
        parts.append([out[:taken] for out in session.run(None, group)])
    return [np.concatenate(outputs) for outputs in zip(*parts)]


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


def ort_timer(path: Path, threads: int) -> Timer:
    """A model (.onnx or .ort) in ONNX Runtime as an app runs it (all graph optimisations), with
    `threads` intra-op threads that do not spin when idle: spinning threads of an idle session take
    the core a measured one needs (benchmarks/ort_latency.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises several types for a file it cannot load
        raise InputError(f"'{path}' cannot be loaded by ONNX Runtime ({type(exc).__name__}: {exc})") from None
    (inp,) = session.get_inputs()
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]  # batch 1, or the model's fixed batch
    feed = {inp.name: timing_input(shape, _ORT_DTYPES.get(inp.type, np.float32))}
    return Timer(f"ONNX Runtime {ort.__version__} (CPUExecutionProvider)", lambda: session.run(None, feed))
