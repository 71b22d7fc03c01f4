#!/usr/bin/env python3
"""The usual route to ncnn, for `benchmarks/compile_vs_peers.py --targets ncnn` and
`benchmarks/ncnn_latency.py`: torchvision MobileNetV2 (random weights) → torch.jit.trace → pnnx →
ncnn `.param`/`.bin` (as ../shared/bench/peer_mobile_runtimes.py does, without its ExecuTorch step).

Needs torch, torchvision and pnnx (`pip install torch==2.14.1 torchvision==0.29.1 && pip install --no-deps
pnnx`): never dependencies of mnc.

    .peer/bin/python benchmarks/peer_pnnx.py --arch mobilenet_v2 --resolution 224 -o peer/
"""

import argparse
import os
import shutil
import subprocess
import sys

import torch
import torchvision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("-o", "--out", default="peer")
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    model = getattr(torchvision.models, a.arch)().eval()
    x = torch.randn(1, 3, a.resolution, a.resolution)
    torch.jit.trace(model, x).save(os.path.join(a.out, f"{a.arch}.pt"))
    pnnx = shutil.which("pnnx") or os.path.join(os.path.dirname(sys.executable), "pnnx")
    shape = f"inputshape=[1,3,{a.resolution},{a.resolution}]"
    subprocess.run([pnnx, f"{a.arch}.pt", shape], cwd=a.out, check=True, capture_output=True)


if __name__ == "__main__":
    main()
