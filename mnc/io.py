"""Atomic output: a reader sees the old artifact or the complete new one, never half of one.

Artifacts are staged next to their destination (same file system), verified there, then
renamed into place. A package directory (.mlpackage) replaces an old one by two renames; between
them, for an instant, neither exists."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged(destination: Path):
    """Yield a path beside `destination` to build the artifact at; it is removed unless installed."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield workdir / destination.name
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def install(staged_path: Path, destination: Path) -> None:
    if staged_path.is_dir() and destination.exists():
        old = destination.with_name(f".{destination.name}.old.{os.getpid()}")
        os.replace(destination, old)
        os.replace(staged_path, destination)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    else:
        os.replace(staged_path, destination)


def digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256) of a file, or of a package directory's files. A Core ML package's
    Manifest.json is left out: it carries random identifiers that change with every build."""
    if path.is_file():
        data = path.read_bytes()
        return len(data), hashlib.sha256(data).hexdigest()
    h, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel == "Manifest.json":
            continue
        data = f.read_bytes()
        size += len(data)
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return size, h.hexdigest()
