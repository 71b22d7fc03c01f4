"""int8 against fp32, and against ONNX Runtime's own quantiser, in one run.

- mnc: `specs/v2.mnet` 1.0/224 compiled to ONNX in fp32 and with `--quantize int8` (synthetic
  calibration: these are seeded, untrained weights; latency and size do not depend on that);
- peer: torchvision MobileNetV2 exported by ../shared/bench/peer_onnx.py, quantised with ONNX
  Runtime's `quantize_static` (QDQ, per-channel, the same synthetic calibration images).
  The peer export needs --peer-python (torch + torchvision); the quantisation runs here.

Latency: ONNX Runtime, 1 intra-op thread, batch 1, models alternated every run in rotated order
(benchmarks/ort_latency.py's protocol). Targets: mnc int8 ≥ 1.4× faster than mnc fp32, no slower
than the peer's quantize_static model; int8 file ≤ 0.3× the fp32 file.

    python benchmarks/int8.py --peer-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ort_latency import PEER_SCRIPT, measure  # noqa: E402
from mnc.frontend import load_spec  # noqa: E402
from mnc.pipeline import Quantization, compile_spec  # noqa: E402
from mnc.quant.data import load_calibration  # noqa: E402

CALIB_SAMPLES = 32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", default=sys.executable)
    p.add_argument("--peer-model", help="an already exported peer ONNX model")
    p.add_argument("--rounds", type=int, default=150)
    args = p.parse_args()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = compile_spec(ROOT / "specs" / "v2.mnet", out_dir=tmp / "fp32").artifact
        int8 = compile_spec(
            ROOT / "specs" / "v2.mnet",
            out_dir=tmp / "int8",
            quantization=Quantization("synthetic", samples=CALIB_SAMPLES),
        ).artifact
        peer = Path(args.peer_model) if args.peer_model else tmp / "peer.onnx"
        if not args.peer_model:
            subprocess.run(
                [args.peer_python, str(PEER_SCRIPT), "--arch", "mobilenet_v2", "-o", str(peer)],
                check=True,
                capture_output=True,
            )
        settings = load_spec(ROOT / "specs" / "v2.mnet").settings
        data, _ = load_calibration("synthetic", settings, 224, CALIB_SAMPLES, 0)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.items = iter({"input": x[None]} for x in data)

            def get_next(self):
                return next(self.items, None)

        peer_int8 = tmp / "peer_int8.onnx"
        quantize_static(
            str(peer),
            str(peer_int8),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,
        )
        models = {"mnc fp32": fp32, "mnc int8": int8, "peer int8 (quantize_static)": peer_int8}
        times = measure(models, 1, 20, args.rounds, 1)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"MobileNetV2 1.0/224, ONNX Runtime, 1 thread, {args.rounds} interleaved runs each (median ms):")
        for name, path in models.items():
            print(f"  {name:<30} {1e3 * med[name]:7.2f} ms   {path.stat().st_size / 1e6:6.2f} MB")
        print(f"  int8 speed-up over fp32: {med['mnc fp32'] / med['mnc int8']:.2f}× (target ≥ 1.4)")
        print(
            f"  mnc int8 / peer int8 latency: {med['mnc int8'] / med['peer int8 (quantize_static)']:.3f} "
            "(target ≤ 1.00)"
        )
        print(f"  int8 / fp32 file size: {int8.stat().st_size / fp32.stat().st_size:.3f} (target ≤ 0.3)")


if __name__ == "__main__":
    main()
