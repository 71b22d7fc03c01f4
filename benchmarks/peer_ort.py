#!/usr/bin/env python3
"""The usual route to an ONNX Runtime Mobile `.ort`, for `benchmarks/compile_vs_peers.py --targets ort`:
torchvision MobileNetV2 (random weights) → torch.onnx.export (../shared/bench/peer_onnx.py) → ONNX
Runtime's own converter (`python -m onnxruntime.tools.convert_onnx_models_to_ort`, as ONNX Runtime's
mobile documentation says), each step the process a user would run.

Needs torch, torchvision, onnx and onnxruntime (never dependencies of mnc's runtime):

    .peer/bin/python benchmarks/peer_ort.py --arch mobilenet_v2 -o peer-ort/
"""

import argparse
import subprocess
import sys
from pathlib import Path

PEER_ONNX = Path(__file__).resolve().parents[2] / "shared" / "bench" / "peer_onnx.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = out / f"{a.arch}.onnx"
    subprocess.run([sys.executable, str(PEER_ONNX), "--arch", a.arch, "-o", str(model)], check=True)
    convert = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(model)]
    # One file, as mnc writes: the converter's default also writes a runtime-optimisation variant.
    done = subprocess.run([*convert, "--optimization_style", "Fixed", "--output_dir", str(out)], capture_output=True)
    if done.returncode != 0:
        sys.exit(f"the converter failed:\n{done.stderr.decode()[-2000:]}")
    print(*sorted(p.name for p in out.glob("*.ort")))


if __name__ == "__main__":
    main()
