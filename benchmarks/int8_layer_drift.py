"""How ONNX Runtime's int8 execution drifts from mnc's fake-quant reference through the depth of a
network, when both run the whole network on their own (not fed each other's values, as the
layer-by-layer check does): for every quantised layer, the share of values one or more grid
steps apart, the largest distance in steps, and the cosine. The figures behind the layer-by-layer
verification of int8 artifacts (README, "verified layer by layer").

    python benchmarks/int8_layer_drift.py --weights mobilenet_v2-b0353104.pth --calib photos/calib \\
        --heldout photos/eval --resolution 224
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnc.backends import onnx as onnx_backend  # noqa: E402
from mnc.backends.onnx import run_onnx  # noqa: E402
from mnc.backends.target import Int8Plan  # noqa: E402
from mnc.latency import cpu_line  # noqa: E402
from mnc.passes.manager import resolve_pipeline, run_pipeline  # noqa: E402
from mnc.pipeline import Quantization, build, quantize  # noqa: E402
from mnc.quant.calibrate import DEFAULT_METHOD  # noqa: E402
from mnc.quant.data import load_calibration  # noqa: E402
from mnc.quant.interpreter import FakeQuantInterpreter  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "v2.mnet"))
    p.add_argument("--weights", required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--samples", type=int, default=8, help="held-out images run")
    p.add_argument("--method", default=DEFAULT_METHOD)
    args = p.parse_args()
    built = build(args.spec, resolution=args.resolution, weights=args.weights)
    optimised, _ = run_pipeline(built.graph, resolve_pipeline("default"))
    plan = Int8Plan(onnx_backend.WEIGHT_BITS, True, "", onnx_backend.DEPTHWISE_WEIGHT_BITS)
    graph = quantize(optimised, built, Quantization(args.calib, 100, args.method), plan).graph
    model, names = onnx_backend.instrumented(onnx_backend.build_model(graph, {}), graph)
    x, _ = load_calibration(args.heldout, built.spec.settings, args.resolution, args.samples, 0)
    _, *tensors = run_onnx(model.SerializeToString(), {"input": x.astype(np.float32)})
    ours = dict(zip(names, tensors))
    reference = FakeQuantInterpreter(graph).run({graph.inputs[0]: x.astype(np.float64)}, keep=True)
    print(cpu_line())
    print(f"{'layer':28s} {'≥1 step apart':>14s} {'max steps':>10s} {'cosine':>10s}")
    for name in names:
        q = graph.node(name).qparams.output
        a = (ours[name].astype(np.float64) - q.zero_point) * q.scale
        b = reference[name]
        steps = np.rint(np.abs(a - b) / q.scale)
        cosine = float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-300))
        print(f"{name:28s} {float((steps >= 1).mean()):14.4f} {steps.max():10.0f} {cosine:10.6f}")


if __name__ == "__main__":
    main()
