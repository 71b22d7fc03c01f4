"""The op registry: one record per IR op (mnc/ir/ops/record.py, OpDef), one module per op or family
of ops. Importing this package registers every op, in the order below (the order of OPS).

Adding an op is one module here (its record: attributes, shape rule, cost, kernel, float32 error
model, parameter slots and initialiser, int8 rule) plus one lowering per target; see
docs/architecture.md."""

from __future__ import annotations

from importlib import import_module

from mnc.ir.ops.record import (
    CALIBRATED,
    KEEPS_INPUT_GRID,
    OPS,
    UNIT_INTERVAL,
    Attr,
    Int8Rule,
    Kind,
    OpDef,
    Shape,
    ShapeError,
    param_count,
    register,
)

# Each module registers its ops as it is imported: this is the order of OPS.
_MODULES = (
    "graph_input",
    "conv",
    "batchnorm",
    "elementwise",
    "pooling",
    "resize",
    "tensors",
    "fc",
    "softmax",
    "affine",
)
_loaded = {m: import_module(f"{__name__}.{m}") for m in _MODULES}
dilation, is_depthwise = _loaded["conv"].dilation, _loaded["conv"].is_depthwise
depthwise_multiplier = _loaded["conv"].depthwise_multiplier
MAX_RESIZE = _loaded["resize"].MAX_RESIZE

__all__ = [
    "CALIBRATED",
    "KEEPS_INPUT_GRID",
    "MAX_RESIZE",
    "OPS",
    "UNIT_INTERVAL",
    "Attr",
    "Int8Rule",
    "Kind",
    "OpDef",
    "Shape",
    "ShapeError",
    "depthwise_multiplier",
    "dilation",
    "is_depthwise",
    "param_count",
    "register",
]
