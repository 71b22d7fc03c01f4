"""Where int8 loses accuracy, layer by layer (mnc/quant/debug.py): each quantised layer's SQNR
against fp32 when fed fp32 inputs (what the layer alone adds) and in the int8 network (what has
accumulated by then), its calibrated range and the share of fp32 values the range clips; with and
without bias correction.

    python benchmarks/int8_layer_errors.py --weights mobilenet_v2-b0353104.pth --calib photos/calib \\
        --heldout photos/eval --resolution 224 --samples 32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnc.backends.target import Int8Plan  # noqa: E402
from mnc.latency import cpu_line  # noqa: E402
from mnc.passes.manager import resolve_pipeline, run_pipeline  # noqa: E402
from mnc.pipeline import Quantization, build, quantize  # noqa: E402
from mnc.quant.calibrate import DEFAULT_METHOD  # noqa: E402
from mnc.quant.data import load_calibration  # noqa: E402
from mnc.quant.debug import layer_errors  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "v2.mnet"))
    p.add_argument("--weights", required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--samples", type=int, default=32, help="held-out images run")
    p.add_argument("--method", default=DEFAULT_METHOD)
    p.add_argument("--weight-bits", type=int, default=8)
    args = p.parse_args()
    built = build(args.spec, resolution=args.resolution, weights=args.weights)
    optimised, _ = run_pipeline(built.graph, resolve_pipeline("default"))
    x, _ = load_calibration(args.heldout, built.spec.settings, args.resolution, args.samples, 0)
    plan = Int8Plan(args.weight_bits, True, "")
    tables = {}
    for corrected in (False, True):
        q = Quantization(args.calib, 100, args.method, bias_correction=corrected)
        tables[corrected] = layer_errors(quantize(optimised, built, q, plan).graph, x)
    print(cpu_line())
    print(f"{len(x)} held-out images at {args.resolution}², {args.weight_bits}-bit weights; SQNR in dB")
    print(f"{'layer':28s} {'op':14s} {'alone':>7s} {'network':>8s} {'+bias corr.':>12s} {'range':>20s} {'clipped':>8s}")
    for e, c in zip(tables[False], tables[True]):
        span = f"[{e.low:.3f}, {e.high:.3f}]"
        print(
            f"{e.name:28s} {e.op:14s} {e.isolated_sqnr:7.2f} {e.propagated_sqnr:8.2f} {c.propagated_sqnr:12.2f} "
            f"{span:>20s} {e.clipped:8.5f}"
        )


if __name__ == "__main__":
    main()
