"""Backends: one module per target, each a Target (mnc/backends/target.py) reading the IR only.
Adding a target is one module plus a line in REGISTERED.

A target's module is imported when the target is first used (`TARGETS[name]`), so that a build
imports only the format libraries it needs: its suffix is known without importing it, and the
modules stay light enough to import for their `choices` (the command line's flags): Core ML and
TFLite import their format libraries where they lower, write or read an artifact. ONNX imports
`onnx` at the top (the reference every build runs needs it anyway), and `.ort` imports ONNX.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from mnc.backends.target import NetworkFacts, Target, TargetOptions
from mnc.errors import InputError, param

# name → (artifact suffix, the module that defines TARGET)
REGISTERED: dict[str, tuple[str, str]] = {
    "onnx": (".onnx", "mnc.backends.onnx"),
    "coreml": (".mlpackage", "mnc.backends.coreml"),
    "tflite": (".tflite", "mnc.backends.tflite"),
    "ort": (".ort", "mnc.backends.ort"),
    "ncnn": (".ncnn", "mnc.backends.ncnn"),
}
DEFAULT_TARGET = "onnx"  # of the library API; the command line asks for --target


class _Targets(Mapping[str, Target]):
    """The registered targets by name, each imported on first use."""

    def __getitem__(self, name: str) -> Target:
        suffix, module = REGISTERED[name]
        target = importlib.import_module(module).TARGET
        assert (target.name, target.suffix) == (name, suffix), f"{module} registered as {name} {suffix}"
        return target

    def __contains__(self, name: object) -> bool:
        return name in REGISTERED

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTERED)

    def __len__(self) -> int:
        return len(REGISTERED)


TARGETS: Mapping[str, Target] = _Targets()


def get_target(name: str | None) -> Target:
    name = DEFAULT_TARGET if name is None else name
    if name not in TARGETS:
        raise InputError(f"unknown target '{name}'; targets are {', '.join(TARGETS)}")
    return TARGETS[name]


def target_of(path: Path) -> Target:
    """The target whose artifacts have this file name's suffix."""
    for name, (suffix, _) in REGISTERED.items():
        if path.name.endswith(suffix):
            return TARGETS[name]
    raise InputError(
        f"'{path}': unknown artifact type; expected one of " + ", ".join(s for s, _ in REGISTERED.values())
    )


def targets_taking(flag: str) -> list[str]:
    return [name for name, t in TARGETS.items() if flag in t.choices]


def target_options(target: Target, given: TargetOptions, network: NetworkFacts):
    """The target's typed options; a flag it does not take is an error naming the targets that do."""
    foreign = [f for f in given.given if f not in target.choices]
    if foreign:
        takers = sorted({t for f in foreign for t in targets_taking(f)})
        raise InputError(f"{', '.join(param(f) for f in foreign)}: only for {param('target', '/'.join(takers))}")
    return target.options(given, network)
