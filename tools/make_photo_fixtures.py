#!/usr/bin/env python3
"""Make tests/fixtures/photos/: small crops of natural photographs for calibration and held-out
checks on ImageNet-trained weights (tests/test_real_weights.py); or, with --benchmark-set DIR, the
larger set benchmarks/int8_accuracy.py measures on.

The photographs ship inside PyPI packages (no download at test time): scikit-image's sample data
(`pip download --no-deps scikit-image`, unzip `skimage/data/`), matplotlib's sample data and, for the
benchmark set, scikit-learn's two sample photographs (`sklearn/datasets/images/` in its wheel).

    python tools/make_photo_fixtures.py SKIMAGE_DATA_DIR MATPLOTLIB_SAMPLE_DATA_DIR
    python tools/make_photo_fixtures.py --benchmark-set photos/ SKIMAGE_DATA_DIR MATPLOTLIB_SAMPLE_DATA_DIR \\
        --sklearn-images SKLEARN_IMAGES_DIR

Fixtures: each source gives three seeded square crops (45-100 % of its shorter side, some
mirrored), resized to 112×112 and saved as JPEG: two go to calib/, one to heldout/. SOURCES.txt
names the sources. The benchmark set: 24 such crops of each of 20 images at 224×224, one in six to
calib/ (80), the rest to eval/ (400); not committed, so its sources need no licence check here.
"""

from __future__ import annotations

import argparse
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
BENCHMARK_SKIMAGE = [
    "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png",
    "motorcycle_right.png", "retina.jpg", "rocket.jpg", "camera.png", "coins.png", "moon.png", "brick.png",
    "grass.png", "gravel.png", "page.png",
]  # fmt: skip
BENCHMARK_MATPLOTLIB = ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"]
BENCHMARK_SKLEARN = ["china.jpg", "flower.jpg"]
BENCHMARK_CROPS = 24


def crops(sources: list[Path], out: Path, per_source: int, size: int, folder) -> None:
    """Seeded square crops of each source into out/folder(j) for its j-th crop."""
    rng = np.random.default_rng(0)
    for source in sources:
        image = Image.open(source).convert("RGB")
        w, h = image.size
        for j in range(per_source):
            side = int(min(w, h) * rng.uniform(0.45, 1.0))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = image.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)
            if rng.uniform() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            (out / folder(j)).mkdir(parents=True, exist_ok=True)
            crop.save(out / folder(j) / f"{source.stem}_{j}.jpg", quality=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("skimage_data", type=Path)
    p.add_argument("matplotlib_sample_data", type=Path)
    p.add_argument("--benchmark-set", type=Path, metavar="DIR")
    p.add_argument("--sklearn-images", type=Path, metavar="DIR", help="for --benchmark-set")
    args = p.parse_args()
    if args.benchmark_set:
        if args.sklearn_images is None:
            p.error("--benchmark-set needs --sklearn-images")
        sources = [args.skimage_data / n for n in BENCHMARK_SKIMAGE]
        sources += [args.matplotlib_sample_data / n for n in BENCHMARK_MATPLOTLIB]
        sources += [args.sklearn_images / n for n in BENCHMARK_SKLEARN]
        crops(sources, args.benchmark_set, BENCHMARK_CROPS, 224, lambda j: "calib" if j % 6 == 0 else "eval")
        return
    sources = [args.skimage_data / n for n in SKIMAGE] + [args.matplotlib_sample_data / n for n in MATPLOTLIB]
    crops(sources, OUT, 3, 112, lambda j: "heldout" if j == 2 else "calib")
    lines = [f"skimage/data/{n}: {LICENCES[n]}" for n in SKIMAGE]
    lines += [f"matplotlib/mpl-data/sample_data/{n}: {LICENCES[n]}" for n in MATPLOTLIB]
    (OUT / "SOURCES.txt").write_text(
        "Crops made by tools/make_photo_fixtures.py of these sample images, which ship in the scikit-image\n"
        "and matplotlib packages:\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
