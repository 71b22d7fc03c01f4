"""The op record: everything mnc knows about one IR op, defined once.

An OpDef states an op's typed attributes (checked by Graph.validate), its shape rule, its cost under
the project's counting conventions (DESIGN.md: MACs of convolutions and fully connected layers;
params are conv/FC weights and biases plus batch-norm scale and shift), the numpy kernel that is its
meaning, its parameter slots with their canonical layout and seeded initialiser, its int8 rule and
the model of how far a floating-point evaluation of it may stray (mnc/ir/roundoff.py). Shapes are
per sample, batch excluded: (C, H, W) for feature maps, (F,) for vectors. Backends lower these ops
(each target registers one lowering per op); they never redefine them.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable

import numpy as np

from mnc.ir.activations import ACTIVATIONS
from mnc.ir.node import Affine, Node
from mnc.ir.roundoff import Precision

Shape = tuple[int, ...]


class ShapeError(Exception):
    """An op cannot be applied to the shapes it receives; the message explains why."""


# ---- typed attributes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A type of attribute value: what it is called in messages and which values it accepts."""

    description: str
    accepts: Callable[[object], bool]


def _whole(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _ints(n: int | None, least: int) -> Callable[[object], bool]:
    return lambda v: (
        isinstance(v, (list, tuple)) and (n is None or len(v) == n) and all(_whole(i) and i >= least for i in v)
    )


POSITIVE = Kind("a whole number ≥ 1", lambda v: _whole(v) and v >= 1)
PAIR = Kind("two whole numbers ≥ 1 [height, width]", _ints(2, 1))
PADS = Kind("four whole numbers ≥ 0 [top, left, bottom, right]", _ints(4, 0))
SHAPE = Kind("a shape: whole numbers ≥ 1", _ints(None, 1))
FLAG = Kind("true or false", lambda v: isinstance(v, bool))
EPSILON = Kind("a number > 0", lambda v: isinstance(v, (float, int)) and not isinstance(v, bool) and v > 0)
ACTIVATION = Kind("an activation of mnc.ir.activations", lambda v: v in ACTIVATIONS)
FUSED_ACTIVATION = Kind("an activation of mnc.ir.activations, or None", lambda v: v is None or v in ACTIVATIONS)


@dataclass(frozen=True)
class Attr:
    name: str
    kind: Kind
    optional: bool = False  # may be absent (its meaning when absent is the op's to say)


# ---- int8 ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8Rule:
    """How an op's output is quantised in the int8 scheme: on its own calibrated grid, on its first
    input's grid (values on one grid averaged, interpolated or moved: integer kernels that do not
    requantise), or on a fixed grid a runtime's kernel requires."""

    grid: str  # "calibrated", "input" or "fixed"
    fixed: Affine | None = None


CALIBRATED = Int8Rule("calibrated")
KEEPS_INPUT_GRID = Int8Rule("input")
# [0, 1] outputs (softmax, the logistic sigmoid): the fixed scale 1/256, zero point 0 (int8 runtimes'
# −128), that TFLite's kernels require of them.
UNIT_INTERVAL = Int8Rule("fixed", Affine(1.0 / 256.0, 0))


# ---- the record -------------------------------------------------------------------------------------

# (node, inputs, their error variances, output, params, precision) → the variance of a rounded
# evaluation's error in the output, before the output's own rounding (which the caller adds).
ErrorModel = Callable[[Node, list, list, np.ndarray, dict, Precision], np.ndarray]
# (node, params, inputs, allowed) → allowed, for a float16 evaluation: what an op that rounds more
# than its one result (a fused activation's input, a float16 constant) adds to the generic bound.
Float16Rule = Callable[[Node, dict, list, np.ndarray], np.ndarray]
# (rng, {slot: shape}, the batch reaching the node) → {slot: array}: seeded parameters.
Initialiser = Callable[[np.random.Generator, dict, np.ndarray], dict]


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: int | None  # None: any number ≥ 1
    attrs: tuple[Attr, ...]
    infer: Callable[[dict, list[Shape]], Shape]
    run: Callable[[dict, dict, list[np.ndarray]], np.ndarray]
    error: ErrorModel  # float32 error model: required, never a silent zero
    int8: Int8Rule | Callable[[dict], Int8Rule]  # a rule, or attrs → rule
    param_shapes: Callable[[dict, list[Shape]], dict[str, Shape]] = lambda attrs, ins: {}
    slots: tuple[str, ...] = ()  # every parameter the op may have, in canonical layout (param_shapes)
    init: Initialiser | None = None  # required where there are slots
    macs: Callable[[dict, list[Shape], Shape], int] = lambda attrs, ins, out: 0
    # Which parameters count as "params" (batch norm's running statistics do not).
    counted_params: tuple[str, ...] = ()
    # A batch norm after it folds into its weights and an activation after it becomes its fused_act.
    absorbs: bool = False
    int8_weights: bool = False  # int8 weights per output channel and, where it has one, an int32 bias
    float16: Float16Rule | None = None  # None: the generic float16 bound covers it

    def int8_rule(self, attrs: dict) -> Int8Rule:
        return self.int8(attrs) if callable(self.int8) else self.int8

    def attr_errors(self, attrs: dict) -> list[str]:
        """What is wrong with a node's attributes against the schema (empty: nothing)."""
        known = {a.name: a for a in self.attrs}
        errors = [f"unknown attribute '{k}'" for k in attrs if k not in known]
        for a in self.attrs:
            if a.name not in attrs:
                if not a.optional:
                    errors.append(f"attribute '{a.name}' is missing ({a.kind.description})")
            elif not a.kind.accepts(attrs[a.name]):
                errors.append(f"attribute '{a.name}' is {attrs[a.name]!r}, expected {a.kind.description}")
        return errors


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op '{op.name}' is registered twice")
    if not callable(op.error):
        raise ValueError(f"op '{op.name}' has no float32 error model")
    if op.slots and op.init is None:
        raise ValueError(f"op '{op.name}' has parameters {op.slots} but no initialiser")
    if set(op.counted_params) - set(op.slots):
        raise ValueError(f"op '{op.name}' counts parameters it does not have")
    OPS[op.name] = op
    return op


def param_count(op: OpDef, attrs: dict, in_shapes: list[Shape]) -> int:
    shapes = op.param_shapes(attrs, in_shapes)
    return sum(prod(shapes[p]) for p in op.counted_params if p in shapes)


def fmt(shape: Shape) -> str:
    return "×".join(map(str, shape)) if shape else "scalar"


# ---- error-model pieces several ops share ----------------------------------------------------------


def carried(node: Node, xs, in_vars, y, params, p: Precision) -> np.ndarray:
    """The input's error, unchanged (data movement): a single input's variance in the output's shape."""
    return in_vars[0].reshape(y.shape)
