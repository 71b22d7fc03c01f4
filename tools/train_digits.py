#!/usr/bin/env python3
"""Train the small network behind the int8 accuracy tests (see DEVELOPERS.md).

Needs torch, torchvision, scikit-learn and Pillow (never dependencies of mnc or its tests):

    .peer/bin/python tools/train_digits.py

scikit-learn's handwritten digits (1,797 8×8 images, shipped inside the package, no download)
are upsampled to 32×32, replicated to RGB and split 80/20 with a fixed seed. A torchvision
mobilenet_v2(width_mult=0.35, num_classes=10) is trained on the 80 % and saved, with
- `tests/fixtures/digits/mobilenet_v2_digits.safetensors`: the trained state dict (float32);
- `tests/fixtures/digits/heldout.npz`: the held-out 20 % as uint8 RGB pixels (N, 3, 32, 32) and labels;
- `tests/fixtures/digits/calib/*.png`: 64 training images, for calibration from a folder.
mnc compiles it with `specs/v2.mnet --alpha 0.35 --resolution 32` (ImageNet mean/std, as here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "digits"
MEAN = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)


def pixels() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    small = (digits.images / 16.0 * 255).astype(np.uint8)  # 0..16 → 0..255
    big = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in small])
    return np.repeat(big[:, None], 3, axis=1), digits.target.astype(np.int64)


def main() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, labels = pixels()
    order = rng.permutation(len(images))
    split = int(0.8 * len(images))
    train, test = order[:split], order[split:]
    x = torch.tensor(((images / 255.0 - MEAN) / STD).astype(np.float32))
    y = torch.tensor(labels)
    model = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=40 * (len(train) // 64 + 1))
    for epoch in range(40):
        model.train()
        for batch in np.array_split(rng.permutation(train), len(train) // 64 + 1):
            xb = x[batch]
            shift = rng.integers(-2, 3, 2)  # small translations
            xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(xb), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out top-1 {acc:.4f}")
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, OUT / "mobilenet_v2_digits.safetensors")
    np.savez_compressed(OUT / "heldout.npz", images=images[test], labels=labels[test])
    calib = OUT / "calib"
    calib.mkdir(exist_ok=True)
    for i in train[:64]:
        Image.fromarray(np.transpose(images[i], (1, 2, 0))).save(calib / f"digit_{i:04d}.png")
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    print(f"saved; held-out top-1 (fp32, torch) {acc:.4f} on {len(test)} images")


if __name__ == "__main__":
    main()
