"""Wall time of the MobileNetV1 grid (V1 paper, Tables 6-7: α 1.0/0.75/0.5/0.25 × resolution
224/192/160/128, 16 variants) built by `mnc sweep`, with --jobs 1 and --jobs 2, alternating
(jobs 1, jobs 2, jobs 1, …) so that noise from other tenants of the host falls on both alike.
Each run is a whole `mnc sweep` process into an empty folder: start-up, 16 compiles with their
verification, the tables and the plot (no --bench). It also checks that both write the same bytes.

    python benchmarks/sweep_time.py                  # onnx, 2 rounds
    python benchmarks/sweep_time.py --target tflite --rounds 3
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
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from mnc.latency import cpu  # noqa: E402
from mnc.parallel import child_environment  # noqa: E402

GRID = ["--alpha", "1.0,0.75,0.5,0.25", "--resolution", "224,192,160,128"]


def run(target: str, jobs: int, out: Path) -> float:
    argv = [sys.executable, "-m", "mnc", "sweep", "specs/v1.mnet", *GRID, "--target", target, "--jobs", str(jobs)]
    start = time.perf_counter()
    subprocess.run([*argv, "-o", str(out)], cwd=ROOT, check=True, capture_output=True, env=child_environment())
    return time.perf_counter() - start


def hashes(out: Path) -> list[str]:
    return [r["sha256"] for r in json.loads((out / "sweep.json").read_text())["variants"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="onnx")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    name, flags = cpu()
    print(f"{name}; {', '.join(flags)}; 16 variants of specs/v1.mnet, --target {args.target}")
    times: dict[int, list[float]] = {1: [], 2: []}
    seen: dict[int, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for jobs in (1, 2):
                out = Path(tmp, f"j{jobs}_{r}")
                times[jobs].append(run(args.target, jobs, out))
                seen.setdefault(jobs, hashes(out))
                assert hashes(out) == seen[jobs], "a sweep wrote different bytes from one run to the next"
                print(f"  round {r + 1}, --jobs {jobs}: {times[jobs][-1]:.1f} s", flush=True)
    assert seen[1] == seen[2], "--jobs 1 and --jobs 2 wrote different bytes"
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"median wall time: --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s (speed-up {one / two:.2f}×)")
    print("both wrote the same 16 artifacts, byte for byte")


if __name__ == "__main__":
    main()
