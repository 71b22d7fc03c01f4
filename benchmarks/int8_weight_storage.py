"""How the ONNX target stores int8 weights, measured: latency in ONNX Runtime of the same quantised
MobileNetV2 with its weights held four ways, beside fp32, in one interleaved run.

- u8s8 7-bit: every weight in [-63, 63] (the old plan; safe from int16 saturation on any host);
- u8s8 7-bit, depthwise 8-bit: the ONNX target's plan (the depthwise kernel accumulates in int32);
- u8s8 8-bit: fastest, but ONNX Runtime's u8×s8 matrix kernels saturate on x86 without VNNI;
- u8u8 8-bit: weights as uint8 around 128, which no kernel saturates (ONNX Runtime's guide).

`specs/v2.mnet` 1.0/224 with seeded weights, synthetic calibration (latency does not depend on the
values); benchmarks/ort_latency.py's protocol (1 intra-op thread, models alternated every round).

    python benchmarks/int8_weight_storage.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ort_latency import measure  # noqa: E402
from mnc.backends import onnx as onnx_backend  # noqa: E402
from mnc.backends.target import Int8Plan  # noqa: E402
from mnc.latency import cpu_line  # noqa: E402
from mnc.passes.manager import resolve_pipeline, run_pipeline  # noqa: E402
from mnc.pipeline import Quantization, build, quantize  # noqa: E402


def as_u8u8(model: bytes) -> bytes:
    """The same model with its int8 weights stored as uint8 + 128 and zero points 128."""
    m = onnx.load_from_string(model)
    for i, t in enumerate(m.graph.initializer):
        if t.name.endswith(".weight_q") or t.name.endswith(".weight_zero_point"):
            a = numpy_helper.to_array(t).astype(np.int16) + 128
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(a.astype(np.uint8), t.name))
    return m.SerializeToString()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rounds", type=int, default=100)
    args = p.parse_args()
    built = build(ROOT / "specs" / "v2.mnet", resolution=224)
    optimised, _ = run_pipeline(built.graph, resolve_pipeline("default"))
    q = Quantization("synthetic", samples=16)

    def int8(plan: Int8Plan) -> bytes:
        return onnx_backend.emit(quantize(optimised, built, q, plan).graph, {})

    models = {
        "fp32": onnx_backend.emit(optimised, {}),
        "u8s8 7-bit": int8(Int8Plan(7, True, "")),
        "u8s8 7-bit, depthwise 8": int8(Int8Plan(7, True, "", depthwise_weight_bits=8)),
        "u8s8 8-bit": int8(Int8Plan(8, True, "")),
        "u8u8 8-bit": as_u8u8(int8(Int8Plan(8, True, ""))),
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, data in models.items():
            paths[name] = Path(tmp) / (name.replace(" ", "_").replace(",", "") + ".onnx")
            paths[name].write_bytes(data)
        times = measure(paths, 1, args.warmup, args.rounds, 1)
    print(cpu_line())
    print(f"{'weights':26s} {'median ms':>10s} {'p90 ms':>8s}")
    for name, t in times.items():
        ms = sorted(1e3 * v for v in t)
        print(f"{name:26s} {statistics.median(ms):10.2f} {ms[int(0.9 * len(ms))]:8.2f}")


if __name__ == "__main__":
    main()
