"""ncnn latency of mnc's network against pnnx's conversion of the same torchvision network, in one
interleaved run (issue 24's target: mnc's file ≤ 1.00× pnnx's). Both files run in ncnn with its
defaults, as an app runs them, on 1 thread; the weights are random (latency does not depend on them).

    .peer/bin/python benchmarks/peer_pnnx.py --arch mobilenet_v2 -o peer/
    python benchmarks/ncnn_latency.py --peer peer/mobilenet_v2.ncnn [--rounds 20] [--runs 50]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnc.latency import cpu  # noqa: E402


def session(param: Path, weights: Path, threads: int):
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    assert net.load_param(str(param)) == 0 and net.load_model(str(weights)) == 0, param
    return ncnn, net


def timer(param: Path, weights: Path, input_blob: str, output_blob: str, shape, threads: int):
    ncnn, net = session(param, weights, threads)
    x = ncnn.Mat(np.random.default_rng(0).standard_normal(shape).astype(np.float32)).clone()

    def run() -> float:
        start = time.perf_counter()
        with net.create_extractor() as ex:
            ex.input(input_blob, x)
            status, _ = ex.extract(output_blob)
        assert status == 0
        return time.perf_counter() - start

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer", required=True, help="pnnx's files without suffix: DIR/mobilenet_v2.ncnn")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--runs", type=int, default=50, help="timed inferences per route per round")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "mnc", "compile", "specs/v2.mnet", "--target", "ncnn"]
        subprocess.run([*argv, "--resolution", str(args.resolution), "-o", tmp], cwd=ROOT, check=True)
        mine = Path(tmp) / f"v2_1.0_{args.resolution}.ncnn"
        shape = (3, args.resolution, args.resolution)
        routes = {
            "mnc": timer(mine / "model.ncnn.param", mine / "model.ncnn.bin", "input", "logits", shape, args.threads),
            "pnnx": timer(Path(args.peer + ".param"), Path(args.peer + ".bin"), "in0", "out0", shape, args.threads),
        }
        for run in routes.values():  # warm up
            for _ in range(10):
                run()
        times: dict[str, list[float]] = {name: [] for name in routes}
        for _ in range(args.rounds):
            for name, run in routes.items():
                times[name].extend(run() for _ in range(args.runs))
    model, flags = cpu()
    print(
        f"MobileNetV2 1.0/{args.resolution} in ncnn (its defaults), {args.threads} thread(s), {args.rounds} rounds "
        f"× {args.runs} runs, interleaved; {model}, {' '.join(flags)}"
    )
    medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    for name, values in times.items():
        print(
            f"  {name:5s} median {medians[name]:6.2f} ms  (p10 {np.percentile(values, 10) * 1e3:.2f}, "
            f"p90 {np.percentile(values, 90) * 1e3:.2f})"
        )
    print(f"  mnc / pnnx = {medians['mnc'] / medians['pnnx']:.3f} (target ≤ 1.00)")


if __name__ == "__main__":
    main()
