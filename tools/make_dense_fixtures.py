#!/usr/bin/env python3
"""Make the dense-prediction parity fixtures under tests/fixtures/torchvision_dense/.

Needs torch and torchvision (never a dependency of mnc; the tests only read the files written
here), the same environment as tools/make_torchvision_fixtures.py:

    python -m venv .peer && .peer/bin/pip install torch==2.14.1 torchvision==0.29.1 safetensors
    .peer/bin/python tools/make_dense_fixtures.py

It builds three torchvision networks on MobileNetV3-Large, randomly initialised with a fixed seed
exactly as the MobileNetV3 fixtures of make_torchvision_fixtures.py are: every conv weight drawn
from 16 evenly spaced levels with the He-normal spread, batch-norm statistics accumulated from
random batches in training mode (plus random scale and shift), every float rounded to float16.

- `ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=7)`.
  weights_backbone=None makes torchvision build the backbone with reduced_tail=True (C5 stage at
  half width: 480 channels), which is also the network of torchvision's COCO checkpoint;
- `lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)`;
- `deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3,
  aux_loss=False)`. Its head (ASPP and the 3x3 conv after it) has 8 M weights, 16-level weights
  would take 5 MB even compressed, so the weights of its convs (all but the last 1x1) are sparse:
  each is zero with probability 1 - DENSITY, else one of the 16 levels, rescaled so the spread is
  still He-normal. Every tap of the dilated 3x3 convs still has about 29 non-zero weights per
  output channel.

For each it writes
- `<name>.npz`: the state dict (torchvision's keys, num_batches_tracked left out, which the
  loaders ignore anyway), float16, compressed;
- `<name>_r<resolution>.npz` (float32): a fixed input batch `input` [2, 3, R, R] (one 320² image
  for SSDLite) fed to the raw network (for SSDLite *not* through model.transform: no resizing
  or normalisation) and
  torchvision's eval-mode outputs: for SSDLite `bbox_regression` [1, A, 4], `cls_logits`
  [1, A, 7] (the head applied to model.backbone(input)), `feature_shapes` [6, 2] (H, W of each
  feature map), the default boxes `anchors_cxcywh` [A, 4] (normalised cx, cy, w, h, from
  anchor_generator._grid_default_boxes) and `anchors_xyxy` [A, 4] (pixel x1, y1, x2, y2, what
  anchor_generator returns for each image); for the segmentation models `out` = model(input)["out"].

It also writes `counts.json` (parameter counts of the three networks at torchvision's default
class counts, in total and per part) and `keys.json` (every state-dict key and shape at the
fixture class counts, so that the layout can be read without torch).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torchvision
from make_torchvision_fixtures import as_stored, initialise  # tools/ is the script's folder
from torch import nn
from torchvision.models import detection, segmentation
from torchvision.models.detection.image_list import ImageList

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "torchvision_dense"
BATCH = 2
CALIBRATION = (4, 8)  # batches × images, at the fixture resolution
DENSITY = 0.03  # fraction of non-zero weights in the convs of DeepLabV3's head

# name → (builder, fixture kwargs, torchvision's default kwargs, resolution)
MODELS = {
    "ssdlite320_mobilenet_v3_large": (
        detection.ssdlite320_mobilenet_v3_large,
        {"num_classes": 7},
        {"num_classes": 91},
        320,  # the model's own size: below 288 the last extra block strides a 1×1 map, which mnc rejects
    ),
    "lraspp_mobilenet_v3_large": (
        segmentation.lraspp_mobilenet_v3_large,
        {"num_classes": 3},
        {"num_classes": 21},
        72,
    ),
    "deeplabv3_mobilenet_v3_large": (
        segmentation.deeplabv3_mobilenet_v3_large,
        {"num_classes": 3, "aux_loss": False},
        {"num_classes": 21, "aux_loss": False},
        72,
    ),
}


def build(name: str, kwargs: dict) -> nn.Module:
    builder = MODELS[name][0]
    return builder(weights=None, weights_backbone=None, **kwargs)


def run(name: str, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The raw network's outputs (no SSD transform or post-processing)."""
    if name.startswith("ssdlite"):
        feats = model.backbone(x)
        out = model.head(list(feats.values()))
        return {**out, **{f"feature{k}": v for k, v in feats.items()}}
    return dict(model(x))


def sparse(name: str, model: nn.Module) -> set[nn.Module]:
    """The convs drawn sparse: DeepLabV3's head but its last conv (the classes)."""
    if not name.startswith("deeplabv3"):
        return set()
    return {m for m in model.classifier.modules() if isinstance(m, nn.Conv2d)} - {model.classifier[-1]}


def make_model(name: str, seed: int, resolution: int) -> nn.Module:
    """make_torchvision_fixtures' initialisation, for any of the MODELS."""
    torch.manual_seed(seed)
    model = build(name, MODELS[name][1])
    initialise(model, levels=True, sparse=frozenset(sparse(name, model)), density=DENSITY)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()  # calibrate on the activations the network sees in eval mode
    with torch.no_grad():
        for _ in range(CALIBRATION[0]):
            run(name, model, torch.randn(CALIBRATION[1], 3, resolution, resolution))
    model.eval()
    as_stored(model)
    return model


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.endswith(".num_batches_tracked")}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def counts(name: str) -> dict[str, int]:
    model = build(name, MODELS[name][2])
    parts = {"total": count(model), **{k: count(v) for k, v in model.named_children()}}
    if name.startswith("ssdlite"):
        for part in ("backbone.features", "backbone.extra", "head.regression_head", "head.classification_head"):
            parts[part] = count(model.get_submodule(part))
    return {"kwargs": MODELS[name][2], **parts}


def describe(name: str, model: nn.Module) -> None:
    """Print each top-level part's distinct batch-norm eps and activation types."""
    parts = [(k, v) for k, v in model.named_children()]
    if name.startswith("ssdlite"):
        parts = [(p, model.get_submodule(p)) for p in ("backbone.features", "backbone.extra", "head")]
    for part, module in parts:
        eps = sorted({m.eps for m in module.modules() if isinstance(m, nn.BatchNorm2d)})
        acts = Counter(
            type(m).__name__
            for m in module.modules()
            if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.SiLU, nn.GELU))
        )
        print(f"  {part}: batch-norm eps {eps}, activations {dict(acts)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    all_counts, all_keys = {"versions": versions}, {"versions": versions}
    for name, (_, kwargs, _, resolution) in MODELS.items():
        model = make_model(name, args.seed, resolution)
        describe(name, model)
        weights = state(model)
        np.savez_compressed(OUT / f"{name}.npz", **{k: v.half().numpy() for k, v in weights.items()})
        all_keys[name] = {"kwargs": kwargs, "keys": [[k, list(v.shape)] for k, v in weights.items()]}
        all_counts[name] = counts(name)

        gen = torch.Generator().manual_seed(args.seed + resolution)
        batch = 1 if name.startswith("ssdlite") else BATCH  # one 320² image keeps the file small
        x = torch.randn(batch, 3, resolution, resolution, generator=gen)
        with torch.no_grad():
            y = run(name, model, x)
        if name.startswith("ssdlite"):
            feats = [v for k, v in y.items() if k.startswith("feature")]
            grid = [list(f.shape[-2:]) for f in feats]
            arrays = {
                "input": x,
                "bbox_regression": y["bbox_regression"],
                "cls_logits": y["cls_logits"],
                "feature_shapes": torch.tensor(grid, dtype=torch.int64),
                "anchors_cxcywh": model.anchor_generator._grid_default_boxes(grid, [resolution, resolution]),
                "anchors_xyxy": model.anchor_generator(ImageList(x, [(resolution, resolution)] * batch), feats)[0],
            }
            for f in feats:
                print(f"  feature {list(f.shape)}: std {f.std():.3f}")
        else:
            arrays = {"input": x, "out": y["out"]}
        np.savez_compressed(OUT / f"{name}_r{resolution}.npz", **{k: v.contiguous().numpy() for k, v in arrays.items()})
        for k, v in arrays.items():
            if k != "input":
                print(f"{name} r{resolution} {k} {list(v.shape)} {v.dtype}: std {v.float().std():.3f}")
    (OUT / "counts.json").write_text(json.dumps(all_counts, indent=1) + "\n")
    (OUT / "keys.json").write_text(json.dumps(all_keys, indent=1) + "\n")
    print(json.dumps({k: v for k, v in all_counts.items() if k != "versions"}, indent=1))


if __name__ == "__main__":
    main()
