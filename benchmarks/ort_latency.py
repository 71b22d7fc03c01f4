"""ONNX Runtime latency: mnc's models against the usual route (torchvision → torch.onnx.export).

Builds mnc's V2 1.0/224, V1 1.0/224 and V1 0.5/160 ONNX models (default passes) and the peer's
torchvision MobileNetV2 1.0/224 export (../shared/bench/peer_onnx.py, which needs the optional,
large `pip install torch==2.14.1 torchvision==0.29.1`, run by --peer-python), then measures all
of them in one process with the session options `mnc bench` uses, at 1 and 2 intra-op threads. Models
alternate on every run, so bursts of noise from other tenants of the host fall on all of them
alike. Thread spinning is off for every session (see session()): with it on, interleaved
sessions slow each other down at 2 threads (seen here: medians jumping between 6.4 and 8.5 ms,
and 20 ms when alternating every run). The minimum is printed beside the median.

    python benchmarks/ort_latency.py --peer-python /path/to/venv-with-torch/bin/python
    python benchmarks/ort_latency.py --peer-model peer_v2.onnx     # reuse an exported peer
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
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from mnc.backends.onnx import ort_timer  # noqa: E402
from mnc.latency import cpu  # noqa: E402
from mnc.pipeline import compile_spec  # noqa: E402

PEER_SCRIPT = ROOT.parent / "shared" / "bench" / "peer_onnx.py"
MNC_MODELS = [
    ("mnc v2 1.0/224", "v2.mnet", 1.0, 224),
    ("mnc v1 1.0/224", "v1.mnet", 1.0, 224),
    ("mnc v1 0.5/160", "v1.mnet", 0.5, 160),
]
PEER_MACS = 300_774_272  # torchvision MobileNetV2 1.0/224 (its published 0.30 GFLOPS)


def measure(models: dict[str, Path], threads: int, warmup: int, rounds: int, per_round: int) -> dict[str, list[float]]:
    # The sessions `mnc bench` times (backends/onnx.py ort_timer): thread spinning off, since each
    # session owns an intra-op pool whose threads spin after a run, and with several sessions
    # interleaved on 2 cores the idle ones' spinning steals the core the running one needs.
    timers = {name: ort_timer(path, threads) for name, path in models.items()}
    for timer in timers.values():
        for _ in range(warmup):
            timer.run()
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(timers)
    for r in range(rounds):
        # Rotate the order every round: a model's position within a round shifts its timing by
        # as much as the differences measured here (seen here: the same model 0.8 % apart).
        for name in order[r % len(order) :] + order[: r % len(order)]:
            run = timers[name].run
            for _ in range(per_round):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", default=sys.executable, help="python with torch and torchvision")
    p.add_argument("--peer-model", help="an already exported peer ONNX model")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rounds", type=int, default=150, help="runs per model")
    p.add_argument("--per-round", type=int, default=1, help="consecutive runs of one model before the next")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models, macs = {}, {}
        for label, spec, alpha, resolution in MNC_MODELS:
            result = compile_spec(ROOT / "specs" / spec, alpha=alpha, resolution=resolution, out_dir=tmp)
            models[label], macs[label] = result.artifact, result.report["macs"]
        peer = Path(args.peer_model) if args.peer_model else tmp / "peer_v2.onnx"
        if not args.peer_model:
            subprocess.run(
                [
                    args.peer_python,
                    str(PEER_SCRIPT),
                    "--arch",
                    "mobilenet_v2",
                    "--alpha",
                    "1.0",
                    "--resolution",
                    "224",
                    "-o",
                    str(peer),
                ],
                check=True,
                capture_output=True,
            )
        models["peer v2 1.0/224 (torchvision)"], macs["peer v2 1.0/224 (torchvision)"] = peer, PEER_MACS

        name, flags = cpu()
        print(f"host CPU: {name}; flags: {', '.join(flags)}")
        print(
            f"onnxruntime {ort.__version__}; {args.rounds * args.per_round} runs per model and thread count, "
            f"interleaved, after {args.warmup} warm-up runs; batch 1"
        )
        print(f"{'model':<32} {'threads':>7} {'median ms':>10} {'min':>7} {'p90':>7} {'GMAC/s':>7}")
        for threads in (1, 2):
            times = measure(models, threads, args.warmup, args.rounds, args.per_round)
            med = {}
            for name, ts in times.items():
                med[name] = statistics.median(ts)
                print(
                    f"{name:<32} {threads:>7} {1e3 * med[name]:>10.2f} {1e3 * min(ts):>7.2f} "
                    f"{1e3 * np.percentile(ts, 90):>7.2f} {macs[name] / med[name] / 1e9:>7.1f}"
                )
            mnc, peer = times["mnc v2 1.0/224"], times["peer v2 1.0/224 (torchvision)"]
            ratio = med["mnc v2 1.0/224"] / med["peer v2 1.0/224 (torchvision)"]
            print(
                f"  {threads} thread(s): mnc v2 / peer v2 latency ratio: median {ratio:.3f}, "
                f"min {min(mnc) / min(peer):.3f} (target ≤ 1.00)"
            )


if __name__ == "__main__":
    main()
