"""Reading weight files into numpy: safetensors (preferred), npz, PyTorch state dicts (without torch,
and without running their pickles: mnc/weights/torch_pickle.py) and Keras models."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnc.errors import InputError, Loc

FLOAT_KINDS = ("f",)


@dataclass
class WeightsFile:
    path: str
    tensors: dict[str, np.ndarray]
    metadata: dict[str, str]
    sha256: str
    # Settings the framework's layers compute with, which a build applies (Keras: padding, batch-norm ε,
    # input normalisation); and a Keras file's model config, for `mnc import`.
    conventions: dict = field(default_factory=dict)
    model_config: dict | None = None


def read_weights(path: str | Path) -> WeightsFile:
    path = str(path)
    loc = Loc.file(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read weights '{path}': {exc.strerror or exc}") from None
    suffix = Path(path).suffix.lower()
    if suffix == ".safetensors":
        tensors, metadata = _safetensors(raw, loc)
    elif suffix == ".npz":
        tensors, metadata = _npz(path, loc), {}
    elif suffix in (".pt", ".pth"):
        tensors, metadata = _torch(raw, loc), {}
    elif suffix in (".keras", ".h5"):
        from mnc.weights.keras import read_keras

        model = read_keras(path, raw, loc)
        if not model.tensors:
            raise InputError("the Keras model has no weighted layers", loc)
        return WeightsFile(path, model.tensors, {}, hashlib.sha256(raw).hexdigest(), model.conventions, model.config)
    else:
        raise InputError(
            f"unknown weights format '{suffix or path}'; use .safetensors, .npz, .pt/.pth "
            "(PyTorch state dicts), or a Keras model (.keras, .h5)",
            loc,
        )
    if not tensors:
        raise InputError("the weights file holds no tensors", loc)
    return WeightsFile(path, tensors, metadata, hashlib.sha256(raw).hexdigest())


def _safetensors(raw: bytes, loc: Loc):
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(raw)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise InputError(f"not a readable safetensors file: {exc}", loc) from None
    # A safetensors file keeps no order (its header lists names as the writer laid the data out): sorted.
    return dict(sorted(tensors.items())), _safetensors_metadata(raw)


def _safetensors_metadata(raw: bytes) -> dict[str, str]:
    import json
    import struct

    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + size]).get("__metadata__", {}) or {}


def _npz(path: str, loc: Loc) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:  # no pickles: data only
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable .npz archive: {exc}", loc) from None


def _torch(raw: bytes, loc: Loc) -> dict[str, np.ndarray]:
    from mnc.weights.torch_pickle import CheckpointError, read_checkpoint

    try:
        return read_checkpoint(raw)
    except CheckpointError as exc:
        raise InputError(f"cannot read PyTorch checkpoint: {exc}", loc) from None


def as_float32(name: str, array: np.ndarray, loc: Loc) -> np.ndarray:
    if array.dtype.kind not in FLOAT_KINDS:
        raise InputError(f"tensor '{name}' has dtype {array.dtype}; weights must be floating point", loc)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"tensor '{name}' has {bad} NaN or infinite value(s)", loc)
    return np.ascontiguousarray(array, dtype=np.float32)
