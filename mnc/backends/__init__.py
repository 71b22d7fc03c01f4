"""Backends: one module per target, each a Target (mnc/backends/target.py) reading the IR only.
Adding a target is one module plus a line in TARGETS."""

from __future__ import annotations

from pathlib import Path

from mnc.backends import coreml, onnx, ort, tflite
from mnc.backends.target import FLAGS, NetworkFacts, Target, TargetOptions
from mnc.errors import InputError

TARGETS: dict[str, Target] = {t.name: t for t in (onnx.TARGET, coreml.TARGET, tflite.TARGET, ort.TARGET)}
DEFAULT_TARGET = onnx.TARGET.name  # of the library API; the command line asks for --target


def get_target(name: str | None) -> Target:
    name = DEFAULT_TARGET if name is None else name
    if name not in TARGETS:
        raise InputError(f"unknown target '{name}'; targets are {', '.join(TARGETS)}")
    return TARGETS[name]


def target_of(path: Path) -> Target:
    """The target whose artifacts have this file name's suffix."""
    for target in TARGETS.values():
        if path.name.endswith(target.suffix):
            return target
    raise InputError(
        f"'{path}': unknown artifact type; expected one of " + ", ".join(t.suffix for t in TARGETS.values())
    )


def targets_taking(flag: str) -> list[str]:
    return [name for name, t in TARGETS.items() if flag in t.choices]


def target_options(target: Target, given: TargetOptions, network: NetworkFacts):
    """The target's typed options; a flag it does not take is an error naming the targets that do."""
    foreign = [f for f in given.given if f not in target.choices]
    if foreign:
        takers = sorted({t for f in foreign for t in targets_taking(f)})
        raise InputError(f"{', '.join(FLAGS[f].option for f in foreign)}: only for --target {'/'.join(takers)}")
    return target.options(given, network)
