"""Whole-process wall time of a verified `mnc compile` against the route a user would otherwise take,
per target, in one interleaved run (issue 21's target: mnc ≤ 0.3× each peer).

- onnx:   `mnc compile specs/v2.mnet --target onnx`   vs `../shared/bench/peer_onnx.py` (torchvision →
          torch.onnx.export)
- coreml: `mnc compile specs/v2.mnet --target coreml` vs `../shared/bench/peer_coreml.py` (torchvision →
          torch.jit.trace → coremltools.convert)
- tflite: `mnc compile specs/v2.mnet --target tflite` vs `../shared/bench/peer_tflite.py` (Keras
          MobileNetV2 → TFLiteConverter)
- ncnn:   `mnc compile specs/v2.mnet --target ncnn`   vs `benchmarks/peer_pnnx.py` (torchvision →
          torch.jit.trace → pnnx; the peer python needs pnnx too)
- ort:    `mnc compile specs/v2.mnet --target ort`    vs `benchmarks/peer_ort.py` (torchvision →
          torch.onnx.export → ONNX Runtime's convert_onnx_models_to_ort; the peer python needs onnxruntime)

mnc's runs include its verification; the peers verify nothing. The peers need environments with torch,
torchvision and coremltools (--peer-python) and tensorflow-cpu (--tf-python): optional, large, never
dependencies of mnc. `--baseline DIR` also times another checkout's mnc (e.g. the commit before a
change) in the same interleaving. Rounds alternate the routes so that noise falls on all alike; medians
are compared.

    python benchmarks/compile_vs_peers.py --peer-python .peer/bin/python --tf-python .peer/bin/python \\
        [--targets onnx,coreml,tflite] [--repeats 5] [--baseline ../old-checkout]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH = ROOT.parent / "shared" / "bench"

from mnc.latency import cpu  # noqa: E402

PEERS = {  # target → (script, the python option that runs it, extra arguments)
    "onnx": (BENCH / "peer_onnx.py", "peer_python", ["--arch", "mobilenet_v2", "-o", "{tmp}/peer.onnx"]),
    "coreml": (BENCH / "peer_coreml.py", "peer_python", ["--arch", "mobilenet_v2", "-o", "{tmp}/peer"]),
    "tflite": (BENCH / "peer_tflite.py", "tf_python", ["-o", "{tmp}/peer.tflite"]),
    "ncnn": (ROOT / "benchmarks" / "peer_pnnx.py", "peer_python", ["--arch", "mobilenet_v2", "-o", "{tmp}/peer-ncnn"]),
    "ort": (ROOT / "benchmarks" / "peer_ort.py", "peer_python", ["--arch", "mobilenet_v2", "-o", "{tmp}/peer-ort"]),
}


def timed(argv: list[str], env: dict | None = None, cwd: Path = ROOT) -> float:
    # Every route runs from compiled bytecode, as installed packages do (pip compiles a wheel's modules
    # when it installs them): a PYTHONDONTWRITEBYTECODE in the environment would have mnc's checkout
    # compiled from source in every run (0.1 s), the peers' site-packages not.
    env = {k: v for k, v in (env or os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--peer-python",
        help="python with torch, torchvision, onnx and coremltools (pnnx for ncnn, onnxruntime for ort)",
    )
    p.add_argument("--tf-python", help="python with tensorflow-cpu")
    p.add_argument("--targets", default="onnx,coreml,tflite")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--baseline", help="another checkout whose mnc is timed too (run from its folder, on its path)")
    args = p.parse_args()
    targets = args.targets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        routes: dict[str, tuple[list[str], dict | None, Path]] = {}
        for target in targets:
            mnc = [sys.executable, "-m", "mnc", "compile", "specs/v2.mnet", "--target", target]
            routes[f"mnc {target}"] = ([*mnc, "-o", f"{tmp}/mnc-{target}"], None, ROOT)
            if args.baseline:
                # Run from the baseline's folder: `python -m` puts the working folder before PYTHONPATH.
                baseline = Path(args.baseline).resolve()
                env = {**os.environ, "PYTHONPATH": str(baseline)}
                routes[f"baseline {target}"] = ([*mnc, "-o", f"{tmp}/base-{target}"], env, baseline)
            script, python_option, extra = PEERS[target]
            python = getattr(args, python_option)
            if python:
                command = [python, str(script), *[a.format(tmp=tmp) for a in extra]]
                routes[f"peer {target}"] = (command, None, ROOT)
        for argv, env, cwd in routes.values():  # warm the file cache for every route
            timed(argv, env, cwd)
        times: dict[str, list[float]] = {name: [] for name in routes}
        for _ in range(args.repeats):
            for name, (argv, env, cwd) in routes.items():
                times[name].append(timed(argv, env, cwd))
    model, flags = cpu()
    print(f"MobileNetV2 1.0/224, whole processes, {args.repeats} interleaved rounds; {model}, {' '.join(flags)}")
    for name, values in times.items():
        print(f"  {name:16s} median {statistics.median(values):6.2f} s  ({min(values):.2f}–{max(values):.2f})")
    for target in targets:
        mine = statistics.median(times[f"mnc {target}"])
        for other in ("peer", "baseline"):
            if f"{other} {target}" in times:
                ratio = mine / statistics.median(times[f"{other} {target}"])
                print(f"  {target}: mnc / {other} = {ratio:.2f}" + (" (target ≤ 0.3)" if other == "peer" else ""))


if __name__ == "__main__":
    main()
