"""PyTorch checkpoints (.pt, .pth) read without torch, and without running their pickles.

A checkpoint is a pickle whose tensors point into raw storages. Two containers exist: the zip
archive of torch >= 1.6 (`NAME/data.pkl`, the storages as `NAME/data/KEY`) and the legacy stream
of older files, torchvision's published weights among them (pickles for the magic number, protocol
and system info, the object, the storage keys, then each storage as an int64 count and its bytes).
The unpickler builds only what a state dict holds — ordered dicts, tensors and their storages — and
refuses any other global, so a checkpoint can never run code here (torch's own weights_only rule).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a checkpoint this reader can take (message says why)."""


@dataclass(frozen=True, slots=True)  # no __dict__: a pickle's BUILD cannot change it
class _StorageType:
    dtype: np.dtype


@dataclass
class _Storage:
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple
    stride: tuple

    def array(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise CheckpointError("a tensor's storage has no data")
        # Everything here came from the pickle: checked before numpy is asked to view memory by it.
        numbers = (self.offset, *self.shape, *self.stride)
        if not all(type(v) is int and v >= 0 for v in numbers) or len(self.shape) != len(self.stride):
            raise CheckpointError("a tensor with a negative or malformed offset, shape or stride")
        size = int(np.prod(self.shape, dtype=object))
        if size > len(flat):
            raise CheckpointError("a tensor has more elements than its storage")
        if size == 0:
            return np.zeros(self.shape, dtype=flat.dtype)
        if self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) >= len(flat):
            raise CheckpointError("a tensor reaches past the end of its storage")
        if not self.shape:
            return flat[self.offset].copy()
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], self.shape, [s * item for s in self.stride], writeable=False
        )
        return np.array(view)  # a copy in C order, independent of the storage


def _rebuild_tensor(storage, offset, shape, stride, *_):
    return _Tensor(storage, offset, tuple(shape), tuple(stride))


def _rebuild_parameter(tensor, *_):
    return tensor


# Made afresh for every reference, so nothing a pickle does to one (BUILD sets attributes) outlives it.
_GLOBALS = {
    ("collections", "OrderedDict"): lambda: OrderedDict,
    ("torch._utils", "_rebuild_tensor"): lambda: lambda *args: _rebuild_tensor(*args),
    ("torch._utils", "_rebuild_tensor_v2"): lambda: lambda *args: _rebuild_tensor(*args),
    ("torch._utils", "_rebuild_parameter"): lambda: lambda *args: _rebuild_parameter(*args),
    **{("torch", name): (lambda d=dtype: _StorageType(np.dtype(d))) for name, dtype in STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) not in _GLOBALS:
            raise CheckpointError(f"it holds a {module}.{name}, which a plain state dict does not (not read)")
        return _GLOBALS[module, name]()

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise CheckpointError("an unexpected persistent object (not a storage)")
        if len(saved_id) < 5:
            raise CheckpointError("a storage reference without its type, key or size")
        storage_type, key, _location, numel = saved_id[1:5]
        if not isinstance(storage_type, _StorageType) or type(numel) is not int or numel < 0:
            raise CheckpointError("a storage of an unknown type or size")
        storage = self.storages.setdefault(str(key), _Storage(storage_type.dtype, numel))
        view = saved_id[5] if len(saved_id) > 5 else None
        if view is not None:  # legacy: a view into another storage (key, offset, size)
            raise CheckpointError("storage views (a very old checkpoint format) are not supported")
        return storage


def _load_data(stream):
    """A pickle of the legacy header (numbers, dicts, key lists), through the same allow-list."""
    return _Unpickler(stream, {}).load()


def read_checkpoint(raw: bytes) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint's state dict ('state_dict' inside a training checkpoint is taken).

    Raises CheckpointError for anything else, whatever the file holds."""
    try:
        return _read_checkpoint(raw)
    except CheckpointError:
        raise
    except Exception as exc:  # a damaged or crafted pickle fails in many ways; each is a bad file
        raise CheckpointError(f"not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def _read_checkpoint(raw: bytes) -> dict[str, np.ndarray]:
    if raw[:4] == b"PK\x03\x04":
        state = _read_zip(raw)
    else:
        state = _read_legacy(raw)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError("it is not a state dict (a mapping of names to tensors)")
    return {str(k): v.array() for k, v in state.items() if isinstance(v, _Tensor)}


def _read_zip(raw: bytes):
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        names = archive.namelist()
        (pickled,) = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1] or [None]
        if pickled is None:
            raise CheckpointError("a zip archive without a data.pkl: not a PyTorch checkpoint")
        root = pickled.split("/")[0]
        byteorder = archive.read(f"{root}/byteorder").decode() if f"{root}/byteorder" in names else "little"
        storages: dict[str, _Storage] = {}
        state = _Unpickler(io.BytesIO(archive.read(pickled)), storages).load()
        for key, storage in storages.items():
            data = archive.read(f"{root}/data/{key}")
            storage.data = _storage_array(data, storage, byteorder)
    except (zipfile.BadZipFile, KeyError, pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointError(f"a damaged checkpoint archive ({exc})") from None
    return state


def _read_legacy(raw: bytes):
    stream = io.BytesIO(raw)
    try:
        if _load_data(stream) != LEGACY_MAGIC:
            raise CheckpointError("not a PyTorch checkpoint (no zip archive, no legacy magic number)")
        _load_data(stream)  # protocol version
        info = _load_data(stream)
        byteorder = "little" if not isinstance(info, dict) or info.get("little_endian", True) else "big"
        storages: dict[str, _Storage] = {}
        state = _Unpickler(stream, storages).load()
        keys = _load_data(stream)
    except CheckpointError:
        raise
    except Exception as exc:  # pickle reports damage as many types
        raise CheckpointError(f"not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    for key in keys:
        storage = storages.get(str(key))
        header = stream.read(8)
        if storage is None or len(header) < 8:
            raise CheckpointError("the checkpoint's storages are damaged or cut short")
        (count,) = struct.unpack("<q" if byteorder == "little" else ">q", header)
        data = stream.read(count * storage.dtype.itemsize)
        if count != storage.numel or len(data) < count * storage.dtype.itemsize:
            raise CheckpointError("the checkpoint's storages are damaged or cut short")
        storage.data = _storage_array(data, storage, byteorder)
    return state


def _storage_array(data: bytes, storage: _Storage, byteorder: str) -> np.ndarray:
    dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
    if len(data) != storage.numel * dtype.itemsize:
        raise CheckpointError("a storage's size does not match its bytes")
    return np.frombuffer(data, dtype=dtype).astype(storage.dtype.newbyteorder("="), copy=False)
