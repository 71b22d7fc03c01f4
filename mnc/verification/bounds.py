"""How far a correct floating-point evaluation of the IR may stray from the exact one, per output
element, derived from the computation itself: the length of each accumulation and the magnitudes
of its terms, propagated through the network.

Rounding errors are modelled as independent, zero-mean and of relative size u (2⁻²⁴ in float32),
the usual probabilistic model of rounding-error analysis (Higham & Mary, 2019; mnc/ir/roundoff.py).
Each op's record states how its evaluation errs (OpDef.error, in mnc/ir/ops; an op cannot be
registered without one), for example:

- a dot product of n terms (conv, fc) adds variance u²·n·Σ(wᵢxᵢ)² (each partial sum rounded, its
  size growing with √k), plus u_w²·Σ(wᵢxᵢ)² for the weights stored rounded;
- every rounded result y adds u_out²·y² (op outputs, sums, products);
- an error already present is carried forward linearly: through a conv/fc with the squared
  weights, through an activation with its steepest slope within K standard deviations of the value
  (0 where it is flat: a ReLU below zero stops an error), through batch norm with its scale,
  through a product with the other factor, through softmax with its Jacobian.

The comparison then allows K standard deviations per element (K = TOLERANCE_SIGMAS). The variance
grows with width (n) and depth exactly as the errors do, so a deep or wide network is not failed
for rounding it cannot avoid; a corruption is measured against the same per-element scale.
A network evaluated in float16 throughout (Core ML's fp16 programs round every op's result) is not
modelled end to end: at fp16's unit roundoff (2⁻¹¹) this first-order model runs away (the error
windows cover every activation's kink). Such artifacts are checked layer by layer instead
(float16_layer): each op, fed the artifact's own float16 inputs, may differ from its exact result
by its float32 arithmetic (the model above, inputs exact) plus the rounding of its result to float16,
which is bounded outright: |fl16(v) − v| ≤ 2⁻¹¹·|v| for normal numbers, half the smallest subnormal
(2⁻²⁵) below them.
"""

from __future__ import annotations

import numpy as np

from mnc.ir.activations import slope
from mnc.ir.graph import Graph
from mnc.ir.interpreter import Interpreter
from mnc.ir.node import Node
from mnc.ir.ops import OPS
from mnc.ir.ops.linear import keeping_pre_activation
from mnc.ir.roundoff import (
    EXACT_INPUTS_FLOAT32,
    FLOAT32,
    FP16_TINY,
    FP16_U,
    FP32_U,
    TOLERANCE_SIGMAS,
    Precision,
)

__all__ = ["FLOAT32", "TOLERANCE_SIGMAS", "Precision", "RoundingVariance", "exceedance", "float16_layer", "slope"]


class RoundingVariance(Interpreter):
    """Runs the IR in float64 and carries, beside each value, the variance of a rounded evaluation's
    error in it (each op's own error model, OpDef.error). run_node returns the value; `variances`
    holds the rest."""

    def __init__(self, graph: Graph, precision: Precision):
        super().__init__(graph, np.float64)
        self.precision = precision
        self.variances: dict[str, np.ndarray] = {}
        self._users_left = {n: len(graph.users(n)) for n in graph}

    def run_node(self, name: str, node: Node, xs: list[np.ndarray]) -> np.ndarray:
        y = super().run_node(name, node, xs)
        p = self.precision
        in_vars = [self.variances[q] for q in self.graph.inputs_of(name)]
        var = OPS[node.op].error(node, xs, in_vars, y, self.params(node), p)
        self.variances[name] = var + (p.output * y) ** 2
        for q in self.graph.inputs_of(name):  # as the values are freed: no variance outlives its users
            self._users_left[q] -= 1
            if self._users_left[q] == 0 and q not in self.graph.outputs:
                del self.variances[q]
        return y


# Where an output is near zero its own rounding bound is tiny, but errors made upstream are not
# independent of each other there; no element is held to less than this many float32 units of the
# output's largest magnitude.
FLOOR_ULPS = 64


def exceedance(actual: np.ndarray, expected: np.ndarray, allowed: np.ndarray) -> float:
    """The largest |actual − expected| as a multiple of what is allowed there (≤ 1 passes)."""
    expected = np.asarray(expected, np.float64)
    floor = max(FLOOR_ULPS * FP32_U * float(np.abs(expected).max()), np.finfo(np.float32).tiny)
    return float((np.abs(np.asarray(actual, np.float64) - expected) / np.maximum(allowed, floor)).max())


def float16_layer(graph: Graph, name: str, params: dict, xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(one op's exact result on these inputs, how far an evaluation that computes it in float32 and
    rounds to float16 may be from it, per element): its float32 arithmetic (its error model, inputs
    exact) plus the rounding of its result to float16, and what the op's record adds for what else
    a float16 program rounds (OpDef.float16: a fused activation's input, float16 constants)."""
    node = graph.node(name)
    model = RoundingVariance(graph, EXACT_INPUTS_FLOAT32)
    for producer in graph.inputs_of(name):
        model.variances[producer] = np.zeros_like(xs[graph.inputs_of(name).index(producer)])
    model.params = lambda _node: params
    with keeping_pre_activation():
        y = model.run_node(name, node, xs)
        arithmetic = TOLERANCE_SIGMAS * np.sqrt(model.variances[name]) * (1 + FP16_U)
        allowed = arithmetic + FP16_U * np.abs(y) + FP16_TINY
        rule = OPS[node.op].float16
        return y, (allowed if rule is None else rule(node, params, xs, allowed))
