#!/usr/bin/env python3
"""Make the timm parity fixtures under tests/fixtures/timm/ (see DEVELOPERS.md).

Needs torch and timm (never dependencies of mnc; the tests only read the files written here):

    python -m venv .peer-torch && .peer-torch/bin/pip install torch==2.14.1 timm safetensors
    .peer-torch/bin/python tools/make_timm_fixtures.py [MODEL ...]

For each model it writes `<model>.safetensors`: a seeded, randomly initialised timm state dict
with 5 classes whose batch-norm statistics are accumulated from data (random scale and shift),
every float rounded to float16 and stored as float16; convolution weights are drawn from 16
levels (He-scaled) so that the larger models compress (`.npz`, compressed, for those). And
`<model>_r<resolution>.safetensors`: a fixed input batch and timm's output (eval mode, float32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import save_file
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "timm"
MODELS = {
    "mobilenetv2_050": "safetensors",
    "mobilenetv3_small_100": "npz",
    "mobilenetv1_100": "npz",
    # V3 below α 1: timm's own widths (fixed stem and head, expansion as a ratio of the scaled input)
    "mobilenetv3_large_075": "npz",
    "mobilenetv3_small_050": "npz",
    # SiLU throughout and squeeze-and-excite with a SiLU inside (examples/specs/efficientnet_b0.mnet)
    "efficientnet_b0": "npz",
}
RESOLUTION, CLASSES, BATCH, LEVELS = 64, 5, 4, 16


def initialise(model: nn.Module, seed: int | None = None) -> nn.Module:
    """Weights on a few levels (so the fixture compresses), batch-norm statistics from four seeded
    batches; `seed`: reseed first (else the generator goes on from where the caller left it)."""
    if seed is not None:
        torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # running statistics: the plain average over the calibration batches
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.25)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                fan_in = m.weight[0].numel()
                q = torch.randint(0, LEVELS, m.weight.shape, dtype=torch.float32) - (LEVELS - 1) / 2
                m.weight.copy_(q * ((2.0 / fan_in) ** 0.5 / q.std()))
                if m.bias is not None:
                    nn.init.normal_(m.bias, 0.0, 0.1)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, RESOLUTION, RESOLUTION))
    return model.eval()


def make_model(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = initialise(timm.create_model(name, num_classes=CLASSES))
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())  # the values the fixture stores, exactly
    return model


def main(only: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    versions = {"torch": torch.__version__, "timm": timm.__version__}
    for seed, (name, fmt) in enumerate(MODELS.items()):
        if only and name not in only:
            continue
        model = make_model(name, seed)
        state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
        if fmt == "npz":
            np.savez_compressed(OUT / f"{name}.npz", **{k: v.numpy() for k, v in state.items()})
        else:
            save_file(state, OUT / f"{name}.safetensors", metadata={"model": name, **versions})
        x = torch.randn(BATCH, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            y = model(x)
        save_file(
            {"input": x.contiguous(), "output": y.contiguous()},
            OUT / f"{name}_r{RESOLUTION}.safetensors",
            metadata={"model": name, "resolution": str(RESOLUTION), **versions},
        )
        spread = float((y - y.mean(0)).abs().max())
        print(
            f"{name}: {sum(p.numel() for p in model.parameters()):,} params; output spread across inputs {spread:.3f}"
        )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])  # the models named, or all
