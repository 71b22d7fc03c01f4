"""Calibration data: a folder of images, a .npy/.npz array of preprocessed inputs, or (only when
asked for) synthetic images. Everything comes out as the network's normalised float input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnc.errors import InputError, Loc, param
from mnc.samples import normalise, sample_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
STREAM_SYNTHETIC = 2


def load_calibration(
    source: str, settings, resolution: int, samples: int, seed: int, name: str | None = None
) -> tuple[np.ndarray, str]:
    """(inputs N×C×R×R float32, a description for the report, naming the data `name` or else
    `source`). `samples` are chosen with `seed`."""
    if samples < 1:
        raise InputError(f"{param('calib_samples', samples)}: need at least one sample")
    if source == "synthetic":
        return sample_images(
            settings, resolution, samples, seed, STREAM_SYNTHETIC
        ), f"synthetic: {samples} seeded image-like samples (no real data; accuracy is not represented)"
    path = Path(source)
    if path.is_dir():
        data = _folder(path, settings, resolution, samples, seed)
        kind = "images"
    elif path.suffix.lower() in (".npy", ".npz"):
        data = _array(path, settings, resolution)
        kind = "preprocessed array"
    elif path.exists():
        raise InputError(
            "calibration data must be a folder of images, a .npy or .npz array, or 'synthetic'", Loc.file(source)
        )
    else:
        raise InputError(f"calibration data '{source}' does not exist")
    if len(data) > samples:
        data = data[np.sort(np.random.default_rng([seed, 3]).choice(len(data), samples, replace=False))]
    if not np.all(np.isfinite(data)):
        raise InputError("calibration data contains NaN or infinite values", Loc.file(source))
    return np.ascontiguousarray(data, dtype=np.float32), f"{kind}: {name or source} ({len(data)} samples)"


def _folder(path: Path, settings, resolution: int, samples: int, seed: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the calibration folder", Loc.file(str(path)))
    if len(files) > samples:
        chosen = np.random.default_rng([seed, 3]).choice(len(files), samples, replace=False)
        files = [files[i] for i in sorted(chosen)]
    mode = {1: "L", 3: "RGB"}.get(settings.input_channels)
    if mode is None:
        raise InputError(
            f"images can calibrate 1- or 3-channel inputs, not {settings.input_channels}; give a .npy array instead"
        )
    batch = []
    for f in files:
        try:
            with Image.open(f) as image:
                batch.append(_preprocess(image.convert(mode), resolution))
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"cannot read image: {exc}", Loc.file(str(f))) from None
    pixels = np.stack(batch).astype(np.float32)
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    else:
        pixels = pixels.transpose(0, 3, 1, 2)
    return normalise(settings, pixels)


def _preprocess(image, resolution: int) -> np.ndarray:
    """Resize the shorter side to the resolution, then crop the centre square: the usual
    evaluation preprocessing, without the extra 0.875 border (the spec does not ask for it)."""
    from PIL import Image

    w, h = image.size
    scale = resolution / min(w, h)
    image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BILINEAR)
    w, h = image.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    return np.asarray(image.crop((left, top, left + resolution, top + resolution)), dtype=np.float32)


def _array(path: Path, settings, resolution: int) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                keys = archive.files
                key = "inputs" if "inputs" in keys else keys[0] if len(keys) == 1 else None
                if key is None:
                    raise InputError(
                        f"the .npz holds {', '.join(keys)}; name the inputs array 'inputs'", Loc.file(str(path))
                    )
                data = archive[key]
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read calibration array: {exc}", Loc.file(str(path))) from None
    expected = (settings.input_channels, resolution, resolution)
    if data.ndim != 4 or tuple(data.shape[1:]) != expected or data.dtype.kind != "f":
        raise InputError(
            f"calibration array has shape {tuple(data.shape)} and dtype {data.dtype}; expected "
            f"N×{expected[0]}×{expected[1]}×{expected[2]} floats, preprocessed as the spec says",
            Loc.file(str(path)),
        )
    if len(data) == 0:
        raise InputError("calibration array is empty", Loc.file(str(path)))
    return data
