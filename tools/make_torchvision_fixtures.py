#!/usr/bin/env python3
"""Make the torchvision parity fixtures under tests/fixtures/torchvision/ (see DEVELOPERS.md).

Needs torch and torchvision (never a dependency of mnc; the tests only read the files written
here):

    python -m venv .peer && .peer/bin/pip install torch==2.14.1 torchvision==0.29.1 safetensors
    .peer/bin/python tools/make_torchvision_fixtures.py

For each architecture and width it writes
- `<arch>_w<width>.safetensors` (MobileNetV2) or `.npz` (MobileNetV3): a seeded, randomly
  initialised state dict whose batch-norm statistics are non-trivial (accumulated from data in
  training mode, with random scale and shift), every float rounded to float16 and stored as
  float16 to keep the files small. MobileNetV3-Large has 4.2 M parameters even with 10 classes
  (8.4 MB in float16), so the V3 fixtures draw each conv/linear weight from 16 levels (He-scaled)
  and are stored as compressed .npz (about 0.5 byte per weight). The outputs below are computed
  by torchvision from exactly these values;
- `<arch>_w<width>_r<resolution>.safetensors`: a fixed input batch and torchvision's output
  (eval mode, float32) at each resolution.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "torchvision"
CONFIGS = {  # architecture → (widths, resolutions, file format)
    "mobilenet_v2": ((0.35, 0.5, 1.0), (64, 96), "safetensors"),
    "mobilenet_v3_large": ((1.0,), (64, 96), "npz"),
    "mobilenet_v3_small": ((1.0,), (64, 96), "npz"),
}
LEVELS = 16
CLASSES = 10
BATCH = 4


def initialise(model: nn.Module, levels: bool, sparse: frozenset = frozenset(), density: float = 1.0) -> None:
    """Seeded weights with a realistic spread: batch-norm scale and shift at random (statistics are
    accumulated from data afterwards), biases small; with `levels`, every conv/linear weight one of
    16 evenly spaced levels with the He-normal spread; the `sparse` modules' weights zero with
    probability 1 − density (the rest rescaled to keep the spread)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # running statistics: the plain average over the calibration batches
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.25)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, m.in_features**-0.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
        elif isinstance(m, nn.Conv2d) and m.bias is not None:  # squeeze-and-excite convs, classifiers
            nn.init.normal_(m.bias, 0.0, 0.1)
        if levels and isinstance(m, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():  # 16 evenly spaced levels with the He-normal spread
                fan_in = m.weight[0].numel()
                q = torch.randint(0, LEVELS, m.weight.shape, dtype=torch.float32) - (LEVELS - 1) / 2
                q = q * ((2.0 / fan_in) ** 0.5 / q.std())
                if m in sparse:  # +0.0, not -0.0, so that the runs of zeros compress
                    q = torch.where(torch.rand(m.weight.shape) < density, q / density**0.5, 0.0)
                m.weight.copy_(q)


def as_stored(model: nn.Module) -> None:
    """Every float rounded to float16: the values the fixture stores, exactly."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())


def make_model(arch: str, width: float, seed: int, levels: bool) -> nn.Module:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(width_mult=width, num_classes=CLASSES)
    initialise(model, levels)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, 96, 96))
    model.eval()
    as_stored(model)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    for arch, (widths, resolutions, fmt) in CONFIGS.items():
        for width in widths:
            model = make_model(arch, width, args.seed, levels=fmt == "npz")
            state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
            name = f"{arch}_w{width}"
            if fmt == "npz":
                np.savez_compressed(OUT / f"{name}.npz", **{k: v.numpy() for k, v in state.items()})
            else:
                save_file(
                    state,
                    OUT / f"{name}.safetensors",
                    metadata={"arch": arch, "width": str(width), "classes": str(CLASSES), **versions},
                )
            for resolution in resolutions:
                gen = torch.Generator().manual_seed(args.seed + resolution)
                x = torch.randn(BATCH, 3, resolution, resolution, generator=gen)
                with torch.no_grad():
                    y = model(x)
                save_file(
                    {"input": x.contiguous(), "output": y.contiguous()},
                    OUT / f"{name}_r{resolution}.safetensors",
                    metadata={"arch": arch, "width": str(width), "resolution": str(resolution), **versions},
                )
                print(f"{name} r{resolution}: output scale {y.abs().max():.3f}, top-1 {y.argmax(1).tolist()}")


if __name__ == "__main__":
    main()
