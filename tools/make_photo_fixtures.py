#!/usr/bin/env python3
"""Make tests/fixtures/photos/: small crops of natural photographs for calibration and held-out
checks on ImageNet-trained weights (tests/test_real_weights.py).

The photographs ship inside PyPI packages (no download at test time): scikit-image's sample data
(`pip download --no-deps scikit-image`, unzip `skimage/data/`) and matplotlib's sample data.

    python tools/make_photo_fixtures.py SKIMAGE_DATA_DIR MATPLOTLIB_SAMPLE_DATA_DIR

Each source gives three seeded square crops (45-100 % of its shorter side, some mirrored), resized
to 112×112 and saved as JPEG: two go to calib/, one to heldout/. SOURCES.txt names the sources.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "photos"
# Each free of copyright restrictions, as their packages document them.
LICENCES = {
    "astronaut.png": "public domain (NASA)",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "coffee.png": "CC0 (Rachel Michetti)",
    "rocket.jpg": "public domain (SpaceX)",
    "retina.jpg": "CC0 1.0",
    "ihc.png": "no known copyright restrictions",
    "grace_hopper.jpg": "public domain (U.S. Navy)",
}
SKIMAGE = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "retina.jpg", "ihc.png"]
MATPLOTLIB = ["grace_hopper.jpg"]
SIZE = 112


def main() -> None:
    skimage_dir, matplotlib_dir = (Path(a) for a in sys.argv[1:3])
    sources = [skimage_dir / n for n in SKIMAGE] + [matplotlib_dir / n for n in MATPLOTLIB]
    rng = np.random.default_rng(0)
    for folder in ("calib", "heldout"):
        (OUT / folder).mkdir(parents=True, exist_ok=True)
    for source in sources:
        image = Image.open(source).convert("RGB")
        w, h = image.size
        for j in range(3):
            side = int(min(w, h) * rng.uniform(0.45, 1.0))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = image.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.BILINEAR)
            if rng.uniform() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            folder = "heldout" if j == 2 else "calib"
            crop.save(OUT / folder / f"{source.stem}_{j}.jpg", quality=90)
    lines = [f"skimage/data/{n}: {LICENCES[n]}" for n in SKIMAGE]
    lines += [f"matplotlib/mpl-data/sample_data/{n}: {LICENCES[n]}" for n in MATPLOTLIB]
    (OUT / "SOURCES.txt").write_text(
        "Crops made by tools/make_photo_fixtures.py of these sample images, which ship in the scikit-image\n"
        "and matplotlib packages:\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
