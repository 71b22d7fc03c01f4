"""Whole-process wall time to a Core ML package: mnc against the usual route.

- mnc:  `mnc compile specs/v2.mnet --target coreml` (verification included)
- peer: `../shared/bench/peer_coreml.py --arch mobilenet_v2` (torchvision → torch.jit.trace →
        coremltools.convert → .mlpackage; no verification), run by --peer-python, an environment
        with torch, torchvision and coremltools (optional, large; never a dependency of mnc)

Runs alternate between the two so noise falls on both alike; medians are compared.

    python benchmarks/coreml_compile.py --peer-python /path/to/venv/bin/python [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_SCRIPT = ROOT.parent / "shared" / "bench" / "peer_coreml.py"


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", required=True, help="python with torch, torchvision and coremltools")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--precision", default="fp16", help="mnc's --precision (the peer converts at coremltools' default, fp16)"
    )
    args = p.parse_args()
    mnc_times, peer_times, stages = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        mnc_cmd = [
            sys.executable,
            "-m",
            "mnc",
            "compile",
            "specs/v2.mnet",
            "--target",
            "coreml",
            "--precision",
            args.precision,
            "-o",
            f"{tmp}/mnc",
        ]
        peer_cmd = [args.peer_python, str(PEER_SCRIPT), "--arch", "mobilenet_v2", "-o", f"{tmp}/peer"]
        timed(mnc_cmd), timed(peer_cmd)  # warm the file cache for both
        for _ in range(args.repeats):
            mnc_times.append(timed(mnc_cmd))
            stages.append(json.loads(Path(f"{tmp}/mnc/v2_1.0_224.mlpackage.report.json").read_text())["timings_s"])
            peer_times.append(timed(peer_cmd))
    m, pr = statistics.median(mnc_times), statistics.median(peer_times)
    print(f"MobileNetV2 1.0/224 → .mlpackage, {args.repeats} alternating runs each (median, min–max):")
    print(f"  mnc compile --target coreml (verified): {m:6.2f} s  ({min(mnc_times):.2f}–{max(mnc_times):.2f})")
    print(f"  torchvision → ct.convert (peer):       {pr:6.2f} s  ({min(peer_times):.2f}–{max(peer_times):.2f})")
    print(f"  ratio mnc / peer: {m / pr:.3f} (target ≤ 0.3)")
    print(
        "  mnc stages (median s): " + ", ".join(f"{k} {statistics.median(s[k] for s in stages):.3f}" for k in stages[0])
    )


if __name__ == "__main__":
    main()
