#!/usr/bin/env python3
"""Make the fixtures of weights matched in order of computation, under tests/fixtures/in_order/ (issue 22).

Needs torch, torchvision and timm (never dependencies of mnc; the tests only read the files written here):

    .peer-torch/bin/python tools/make_in_order_fixtures.py

Each model is made by its framework's own code with 5 classes, seeded and randomly initialised, its
batch-norm statistics accumulated from data (random scale and shift); convolution and linear weights
are drawn from 16 levels (He-scaled) so that the files compress, and stored as float32 in the order of
the model's state dict:

- `ghostnet_050.npz`: timm's GhostNet α 0.5 (a block's shortcut registered after its main path);
- `mobilenetv4_conv_small_050.npz`: timm's MobileNetV4-Conv-Small α 0.5;
- `mobilenet_v2_035_renamed.pth`: torchvision's MobileNetV2 α 0.35 saved by torch.save with its modules
  renamed as lukemelas's EfficientNet names them (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv` …),
  names no layout knows;

and beside each, `<model>_io.npz`: a seeded input batch (64×64) and the framework's output (eval mode,
float32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
import torchvision
from make_timm_fixtures import initialise  # this folder is on the path of a script run from it

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "in_order"
RESOLUTION, CLASSES, BATCH = 64, 5, 4


def lukemelas_names(state: dict) -> dict:
    """torchvision MobileNetV2's state dict under names like lukemelas's EfficientNet's: the stem
    `_conv_stem`/`_bn0`, a block's convolutions `_expand_conv`, `_depthwise_conv`, `_project_conv` with
    `_bn0`…`_bn2`, the last 1×1 convolution `_conv_head`/`_bn1`, the classifier `_fc`."""
    modules: dict[str, list[str]] = {}  # features.N → its modules in order
    for key in state:
        module = key.rpartition(".")[0]
        if module.startswith("features.") and module not in modules.setdefault(".".join(module.split(".")[:2]), []):
            modules[".".join(module.split(".")[:2])].append(module)
    names, last = {}, len(modules) - 1
    for i, units in enumerate(modules.values()):
        is_bn = [f"{u}.running_mean" in state for u in units]
        if i in (0, last):
            convs, bns = (["_conv_stem"], ["_bn0"]) if i == 0 else (["_conv_head"], ["_bn1"])
        else:
            n = is_bn.count(False)
            convs = [f"_blocks.{i - 1}.{c}" for c in ("_expand_conv", "_depthwise_conv", "_project_conv")[3 - n :]]
            bns = [f"_blocks.{i - 1}._bn{j}" for j in range(3)[3 - n :]]
        convs, bns = iter(convs), iter(bns)
        for unit, bn in zip(units, is_bn):
            names[unit] = next(bns) if bn else next(convs)
    names["classifier.1"] = "_fc"
    renamed = {names[k.rpartition(".")[0]] + "." + k.rpartition(".")[2]: v for k, v in state.items()}
    assert len(renamed) == len(state)
    return renamed


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    models = {
        "ghostnet_050": lambda: timm.create_model("ghostnet_050", num_classes=CLASSES),
        "mobilenetv4_conv_small_050": lambda: timm.create_model("mobilenetv4_conv_small_050", num_classes=CLASSES),
        "mobilenet_v2_035_renamed": lambda: torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=CLASSES),
    }
    for seed, (name, make) in enumerate(models.items()):
        torch.manual_seed(seed)
        model = initialise(make(), seed)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if name.endswith("_renamed"):
            torch.save(lukemelas_names(state), OUT / f"{name}.pth")
        else:
            np.savez_compressed(OUT / f"{name}.npz", **{k: v.numpy() for k, v in state.items()})
        x = torch.randn(BATCH, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            y = model(x)
        np.savez_compressed(OUT / f"{name}_io.npz", input=x.numpy(), output=y.numpy())
        spread = float((y - y.mean(0)).abs().max())
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{name}: {params:,} params; output spread across inputs {spread:.3f}; torch {torch.__version__}, "
            f"timm {timm.__version__}, torchvision {torchvision.__version__}"
        )


if __name__ == "__main__":
    main()
