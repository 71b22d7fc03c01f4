"""Running a .tflite: the LiteRT interpreter in this process (default kernels), and its reference
kernels in a child process (`python -m mnc.backends.tflite`), which may abort on a bad graph.
Executors take and give the reference's NCHW layout; they transpose 4-D tensors at the edges,
outside the model, and return every output in the graph's order."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mnc.backends.target import INPUT_NAME
from mnc.parallel import child_environment


def run_litert(artifact, feeds: dict[str, np.ndarray], *, reference_kernels: bool = False) -> list[np.ndarray]:
    """Run a .tflite in the LiteRT interpreter on a batch given in the reference's NCHW layout."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
    ((_, batch),) = feeds.items()
    x = np.transpose(batch, (0, 2, 3, 1)) if batch.ndim == 4 else batch
    with quiet_native_stderr():  # LiteRT logs "INFO: Created TensorFlow Lite XNNPACK delegate" from C++
        interpreter = Interpreter(model_path=str(artifact), num_threads=1, experimental_op_resolver_type=resolver)
        (inp,) = interpreter.get_input_details()
        outputs = interpreter.get_output_details()  # in the subgraph's order: the graph's outputs'
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
    interpreter.invoke()
    ys = [interpreter.get_tensor(out["index"]) for out in outputs]
    # Feature maps back to NCHW; vectors [N, F] and per-anchor rows [N, rows, K] are the IR's layout.
    return [np.transpose(y, (0, 3, 1, 2)) if y.ndim == 4 else y for y in ys]


@contextlib.contextmanager
def quiet_native_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _int8_tensors(artifact, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Every int8 activation of the model on a batch (NCHW), with the reference kernels, keyed
    'name|scale|zero point'."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = np.transpose(batch, (0, 2, 3, 1))
    with quiet_native_stderr():
        interpreter = Interpreter(
            model_path=str(artifact),
            num_threads=1,
            experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
        )
        (inp,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
    interpreter.invoke()
    found = {}
    for t in interpreter.get_tensor_details():
        scale, zero_point = t["quantization"]
        if t["dtype"] == np.int8 and scale > 0 and len(t["shape"]) > 1 and t["shape"][0] == len(x):
            found[f"{t['name']}|{float(scale)!r}|{int(zero_point)}"] = interpreter.get_tensor(t["index"]).copy()
    return found


def quantization(key: str) -> tuple[float, int]:
    _, scale, zero_point = key.rsplit("|", 2)
    return float(scale), int(zero_point)


def child_main(mode: str, artifact: str, folder: str) -> None:
    batch = np.load(Path(folder) / "input.npy", allow_pickle=False)
    if mode == "run":
        outputs = run_litert(artifact, {INPUT_NAME: batch}, reference_kernels=True)
        np.savez(Path(folder) / "output.npz", **{f"output{i}": y for i, y in enumerate(outputs)})
    else:
        np.savez(Path(folder) / "output.npz", **_int8_tensors(artifact, batch))


def in_child(mode: str, artifact, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Run LiteRT's reference kernels in a separate Python process (`python -m mnc.backends.tflite`):
    on some graphs they abort the process instead of returning an error, and an abort must be a
    failed verification, not a crash of mnc. A plain child process, not multiprocessing, so that
    library users need no `if __name__ == "__main__"` guard."""
    with tempfile.TemporaryDirectory(prefix="mnc-litert-") as tmp:
        np.save(Path(tmp) / "input.npy", batch)
        done = subprocess.run(
            [sys.executable, "-m", "mnc.backends.tflite", mode, str(artifact), tmp],
            capture_output=True,
            text=True,
            preexec_fn=_ignore_interrupts,
            env=child_environment(),
        )
        if done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise RuntimeError(f"LiteRT's reference kernels failed in their process ({why[0]})")
        with np.load(Path(tmp) / "output.npz", allow_pickle=False) as out:
            return {k: out[k] for k in out.files}


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def run_litert_reference(artifact, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a .tflite with LiteRT's reference kernels, in a child process."""
    ((_, batch),) = feeds.items()
    found = in_child("run", artifact, batch)
    return [found[f"output{i}"] for i in range(len(found))]
