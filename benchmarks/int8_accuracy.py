"""int8 accuracy on ImageNet-trained weights: each calibration method and weight width against the
framework's own fp32 outputs, beside ONNX Runtime's quantize_static, in one run.

The reference is what torchvision computes for the held-out images (tools/make_real_weights_fixtures.py
-o writes it with torch; nothing here needs torch). For each calibration method mnc quantises
the network as each target's plan would (the ONNX target: 7-bit weights, 8-bit in depthwise
convolutions; TFLite, .ort and Core ML: 8-bit; and 7-bit everywhere, for comparison), with and
without equalisation and bias correction, emits it as QDQ ONNX and runs it in ONNX Runtime with graph optimisations
off (the QDQ arithmetic in float, which no CPU's integer kernels change: the figures are the same
on every host); the peer quantises mnc's fp32 ONNX model with `quantize_static` (QDQ,
per-channel, uint8 activations, the same calibration images) for each of its methods. Reported:
top-1 agreement with the framework's fp32 and the mean cosine of the logits.

    python tools/make_photo_fixtures.py --benchmark-set photos/ SKIMAGE_DATA MATPLOTLIB_SAMPLE_DATA \\
        --sklearn-images SKLEARN_IMAGES
    .peer-torch/bin/python tools/make_real_weights_fixtures.py --weights mobilenet_v2-b0353104.pth \\
        --heldout photos/eval --resolution 224 -o tv224.npy
    python benchmarks/int8_accuracy.py --weights mobilenet_v2-b0353104.pth --calib photos/calib \\
        --heldout photos/eval --reference tv224.npy
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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
from mnc.quant.calibrate import METHODS  # noqa: E402
from mnc.quant.data import load_calibration  # noqa: E402

# (equalisation, bias correction): each step alone, then both (the default)
STEPS = ((False, False), (False, True), (True, False), (True, True))


def agreement(logits: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    top1 = float((logits.argmax(1) == reference.argmax(1)).mean())
    a, b = logits.astype(np.float64), reference.astype(np.float64)
    cosine = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return top1, float(cosine.mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "v2.mnet"))
    p.add_argument("--weights", required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--reference", required=True, help="the framework's fp32 logits of the held-out images (.npy)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--no-peer", action="store_true")
    args = p.parse_args()

    built = build(args.spec, resolution=args.resolution, weights=args.weights)
    optimised, _ = run_pipeline(built.graph, resolve_pipeline("default"))
    heldout, _ = load_calibration(args.heldout, built.spec.settings, args.resolution, 10_000, 0)
    reference = np.load(args.reference)
    assert len(reference) == len(heldout), "the reference must hold one row per held-out image"
    feed = {"input": heldout.astype(np.float32)}
    print(cpu_line())
    rows = []
    fp32 = onnx_backend.emit(optimised, {})
    rows.append(("mnc fp32", "-", *agreement(run_onnx(fp32, feed)[0], reference)))
    plans = {
        "7-bit": Int8Plan(7, True, ""),
        "7/dw 8": Int8Plan(7, True, "", depthwise_weight_bits=8),  # the ONNX target's plan
        "8-bit": Int8Plan(8, True, ""),
    }
    for method in args.methods.split(","):
        for bits, plan in plans.items():
            for equalized, corrected in STEPS:
                q = Quantization(args.calib, args.samples, method, bias_correction=corrected, equalization=equalized)
                graph = quantize(optimised, built, q, plan).graph
                logits = run_onnx(onnx_backend.emit(graph, {}), feed, optimise=False)[0]
                name = f"mnc int8 {method}{' + equalis.' if equalized else ''}{' + bias corr.' if corrected else ''}"
                rows.append((name, bits, *agreement(logits, reference)))
                print(*rows[-1], flush=True)
    if not args.no_peer:
        rows += peer_rows(fp32, built, args, feed, reference)
    print(f"\n{len(heldout)} held-out images, {args.samples} calibration samples at most, {args.resolution}²")
    print(f"{'model':44s} {'weights':8s} {'top-1 agreement':>16s} {'mean cosine':>12s}")
    for name, bits, top1, cosine in rows:
        print(f"{name:44s} {bits:8s} {top1:16.3f} {cosine:12.4f}")


def peer_rows(fp32: bytes, built, args, feed, reference) -> list[tuple]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    data, _ = load_calibration(args.calib, built.spec.settings, args.resolution, args.samples, 0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({"input": x[None].astype(np.float32)} for x in data)

        def get_next(self):
            return next(self.items, None)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "fp32.onnx"
        source.write_bytes(fp32)
        for method in (CalibrationMethod.MinMax, CalibrationMethod.Entropy, CalibrationMethod.Percentile):
            for reduce_range in (True, False):
                target = Path(tmp) / f"peer_{method.name}_{reduce_range}.onnx"
                quantize_static(
                    str(source),
                    str(target),
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    reduce_range=reduce_range,
                    calibrate_method=method,
                )
                logits = run_onnx(str(target), feed, optimise=False)[0]
                bits = "7-bit" if reduce_range else "8-bit"
                rows.append((f"peer quantize_static {method.name}", bits, *agreement(logits, reference)))
                print(*rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
