"""Compile-time benchmark.

1. `mnc compile specs/v2.mnet --target onnx` as a whole process, repeated; per-stage times
   from the report, and the process wall time (interpreter start-up and imports included).
2. `mnc summary` on synthetic specs of 250 … 4000 bottleneck rows: the cost must grow linearly
   with the number of layers, so time per row should stay flat.

    python benchmarks/compile_time.py [--repeats 5]
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

HEADER = """name = synthetic
input_channels = 3
base_resolution = 32
classes = 10
activation = relu6
width_rounding = make_divisible(divisor=8)
padding = symmetric

| operator       | t | c  | n | s |
|----------------|---|----|---|---|
| conv2d 3x3     | - | 16 | 1 | 2 |
"""


def synthetic_spec(rows: int) -> str:
    body = "".join(f"| bottleneck     | {2 + i % 5} | 16 | 1 | 1 |\n" for i in range(rows))
    return HEADER + body + "| avgpool global |   |    |   |   |\n| fc             |   | k  |   |   |\n"


def compile_v2(repeats: int) -> None:
    walls, stages = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "mnc", "compile", "specs/v2.mnet", "--target", "onnx", "-o", out],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            walls.append(time.perf_counter() - start)
            stages.append(json.loads((Path(out) / "v2_1.0_224.onnx.report.json").read_text())["timings_s"])
    print(
        f"mnc compile specs/v2.mnet --target onnx: median wall {statistics.median(walls):.2f} s "
        f"over {repeats} runs (min {min(walls):.2f}, max {max(walls):.2f})"
    )
    for stage in stages[0]:
        print(f"  {stage:<10} {statistics.median(s[stage] for s in stages):7.3f} s")
    print(
        f"  {'(stages)':<10} {statistics.median(sum(s.values()) for s in stages):7.3f} s; "
        "the rest is interpreter start-up and imports"
    )


def summary_scaling(repeats: int) -> None:
    from mnc.frontend import build_graph, load_spec_text
    from mnc.summary_table import summary_dict

    print("\nmnc summary on synthetic specs (parse, check, lower, shape inference, costs), in-process:")
    print(f"  {'rows':>5} {'nodes':>7} {'median s':>9} {'µs/row':>8}")
    per_row = []
    for rows in (250, 500, 1000, 2000, 4000):
        text = synthetic_spec(rows)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            spec = load_spec_text(text, f"synthetic_{rows}.mnet")
            config = spec.config()
            graph = build_graph(spec, config)
            summary_dict(spec, config, graph)
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        per_row.append(t / rows)
        print(f"  {rows:>5} {len(graph):>7} {t:>9.3f} {1e6 * t / rows:>8.0f}")
    print(f"  time per row, 4000 rows vs 250 rows: {per_row[-1] / per_row[0]:.2f}× (1.0 = linear)")

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "synthetic_1000.mnet"
        path.write_text(synthetic_spec(1000))
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "mnc", "summary", str(path)], cwd=ROOT, check=True, capture_output=True
            )
            walls.append(time.perf_counter() - start)
    print(f"`mnc summary` process on the 1,000-row spec: median wall {statistics.median(walls):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    compile_v2(args.repeats)
    summary_scaling(args.repeats)


if __name__ == "__main__":
    main()
