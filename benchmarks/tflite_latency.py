"""LiteRT latency and compile time: mnc's TFLite models against the usual route (Keras → TFLiteConverter).

- mnc:  specs/v2.mnet 1.0/224 compiled with `--target tflite`, fp32 and `--quantize int8` (synthetic
        calibration: seeded, untrained weights; latency and size do not depend on that);
- peer: Keras applications MobileNetV2 1.0/224 converted by ../shared/bench/peer_tflite.py, fp32 and
        full-integer int8, run by --peer-python, an environment with tensorflow-cpu and ai-edge-litert
        (optional, large; never a dependency of mnc), or reused with --peer-model/--peer-int8-model.

Latency: ai_edge_litert's Interpreter with its default op resolver (XNNPACK delegate), batch 1, a seeded
random float32 NHWC input of the model's input shape, set before each run; only invoke() is timed. All four
models are measured in one process at 1 and 2 threads (num_threads); they alternate on every run, in an
order rotated every round, so bursts of noise from other tenants of the host fall on all of them alike.
Each interpreter owns an XNNPACK thread pool whose workers spin briefly after a run, and LiteRT's Python API
has no switch for it (ONNX Runtime's allow_spinning); unlike ORT's, it does not hurt here: at 2 threads on
2 idle cores the Keras fp32 model took a median 2.77 ms alternating every run, 2.82 ms with --per-round 10
and 2.78 ms alone. Another process busy on one core does hurt: 2 threads then run no faster than 1
(medians ~6 ms, minima ~3.6 ms), so run it on a quiet host. The minimum is printed beside the median.

Compile time: whole-process wall time of `mnc compile specs/v2.mnet --target tflite` (fp32, verification
included) against the peer script (fp32, TensorFlow's import included), alternating, medians compared.

    python benchmarks/tflite_latency.py --peer-python /path/to/venv-with-tensorflow/bin/python
    python benchmarks/tflite_latency.py --peer-model peer.tflite --peer-int8-model peer_int8.tflite
    python benchmarks/tflite_latency.py --no-peer      # mnc's models only
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from mnc.latency import cpu  # noqa: E402
from mnc.pipeline import Quantization, compile_spec  # noqa: E402

PEER_SCRIPT = ROOT.parent / "shared" / "bench" / "peer_tflite.py"
SPEC = ROOT / "specs" / "v2.mnet"
CALIB_SAMPLES = 16


def peer_command(python: str, out: Path, int8: bool) -> list[str]:
    return [python, str(PEER_SCRIPT), "--alpha", "1.0", "--resolution", "224", "-o", str(out)] + (
        ["--int8"] if int8 else []
    )


def mnc_command(out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "mnc", "compile", "specs/v2.mnet", "--target", "tflite", "-o", str(out_dir)]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def measure(models: dict[str, Path], threads: int, warmup: int, rounds: int, per_round: int) -> dict[str, list[float]]:
    interpreters, inputs = {}, {}
    for name, path in models.items():
        it = Interpreter(model_path=str(path), num_threads=threads)  # default resolver: XNNPACK
        it.allocate_tensors()
        detail = it.get_input_details()[0]
        interpreters[name] = it
        inputs[name] = (detail["index"], np.random.default_rng(0).standard_normal(detail["shape"]).astype(np.float32))
        for _ in range(warmup):
            it.set_tensor(*inputs[name])
            it.invoke()
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(interpreters)
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:  # rotated: position shifts timing
            it = interpreters[name]
            for _ in range(per_round):
                it.set_tensor(*inputs[name])
                start = time.perf_counter()
                it.invoke()
                times[name].append(time.perf_counter() - start)
    return times


def compile_times(mnc_cmd: list[str], peer_cmd: list[str] | None, repeats: int) -> tuple[list[float], list[float]]:
    timed(mnc_cmd)  # warm the file cache for both
    if peer_cmd:
        timed(peer_cmd)
    mnc, peer = [], []
    for _ in range(repeats):
        mnc.append(timed(mnc_cmd))
        if peer_cmd:
            peer.append(timed(peer_cmd))
    return mnc, peer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", default=sys.executable, help="python with tensorflow-cpu and ai-edge-litert")
    p.add_argument("--peer-model", help="an already converted peer fp32 .tflite")
    p.add_argument("--peer-int8-model", help="an already converted peer int8 .tflite")
    p.add_argument("--no-peer", action="store_true", help="measure mnc's models only")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rounds", type=int, default=100, help="runs per model and thread count")
    p.add_argument("--per-round", type=int, default=1, help="consecutive runs of one model before the next")
    p.add_argument("--repeats", type=int, default=3, help="whole-process compile runs of each")
    args = p.parse_args()
    name, flags = cpu()
    print(f"host CPU: {name}; flags: {', '.join(flags)}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = compile_spec(SPEC, target="tflite", alpha=1.0, resolution=224, out_dir=tmp / "mnc_fp32")
        int8 = compile_spec(
            SPEC,
            target="tflite",
            alpha=1.0,
            resolution=224,
            out_dir=tmp / "mnc_int8",
            quantization=Quantization("synthetic", samples=CALIB_SAMPLES),
        )
        models = {"mnc fp32": fp32.artifact, "mnc int8": int8.artifact}
        if not args.no_peer:
            for label, given, is_int8 in (("fp32", args.peer_model, False), ("int8", args.peer_int8_model, True)):
                path = Path(given) if given else tmp / f"peer_{label}.tflite"
                if not given:
                    subprocess.run(peer_command(args.peer_python, path, is_int8), check=True, capture_output=True)
                models[f"peer {label} (Keras)"] = path

        print(
            f"LiteRT Interpreter (XNNPACK), MobileNetV2 1.0/224, batch 1; {args.rounds * args.per_round} runs per "
            f"model and thread count, interleaved, after {args.warmup} warm-up runs"
        )
        print(f"{'model':<18} {'threads':>7} {'median ms':>10} {'min':>7} {'size MB':>8}")
        for threads in (1, 2):
            times = measure(models, threads, args.warmup, args.rounds, args.per_round)
            med = {name: statistics.median(ts) for name, ts in times.items()}
            for name, ts in times.items():
                size = models[name].stat().st_size / 1e6
                print(f"{name:<18} {threads:>7} {1e3 * med[name]:>10.2f} {1e3 * min(ts):>7.2f} {size:>8.2f}")
            speedup = f"mnc {med['mnc fp32'] / med['mnc int8']:.2f}×"
            if not args.no_peer:
                speedup += f", peer {med['peer fp32 (Keras)'] / med['peer int8 (Keras)']:.2f}×"
                for q in ("fp32", "int8"):
                    m, pr = times[f"mnc {q}"], times[f"peer {q} (Keras)"]
                    ratio = med[f"mnc {q}"] / med[f"peer {q} (Keras)"]
                    print(
                        f"  {threads} thread(s), mnc/peer {q} latency: median {ratio:.3f}, min {min(m) / min(pr):.3f}"
                    )
            print(f"  {threads} thread(s), int8 speed-up (fp32/int8, median): {speedup}")
        size_ratio = models["mnc int8"].stat().st_size / models["mnc fp32"].stat().st_size
        print(f"  mnc file size int8/fp32: {size_ratio:.3f}")

        peer_cmd = None if args.no_peer else peer_command(args.peer_python, tmp / "peer_timed.tflite", False)
        mnc_t, peer_t = compile_times(mnc_command(tmp / "mnc_timed"), peer_cmd, args.repeats)
    print(f"Whole-process compile to .tflite (fp32), {args.repeats} alternating runs each (median, min–max):")
    m = statistics.median(mnc_t)
    print(f"  mnc compile --target tflite (verified): {m:6.2f} s  ({min(mnc_t):.2f}–{max(mnc_t):.2f})")
    if peer_t:
        pr = statistics.median(peer_t)
        print(f"  Keras → TFLiteConverter (peer):         {pr:6.2f} s  ({min(peer_t):.2f}–{max(peer_t):.2f})")
        print(f"  ratio mnc / peer: {m / pr:.3f} (target ≤ 0.3)")


if __name__ == "__main__":
    main()
