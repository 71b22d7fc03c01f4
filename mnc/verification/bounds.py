"""How far a correct floating-point evaluation of the IR may stray from the exact one, per output
element, derived from the computation itself: the length of each accumulation and the magnitudes
of its terms, propagated through the network.

Rounding errors are modelled as independent, zero-mean and of relative size u (2⁻²⁴ in float32),
the usual probabilistic model of rounding-error analysis (Higham & Mary, 2019):

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

from dataclasses import dataclass

import numpy as np

from mnc.ir import kernels
from mnc.ir.graph import Graph
from mnc.ir.interpreter import Interpreter
from mnc.ir.node import Node
from mnc.ir.ops import OPS, dilation

FP32_U = 2.0**-24
FP16_U = 2.0**-11
FP16_TINY = 2.0**-25  # half the smallest float16 subnormal: the rounding error near zero
TOLERANCE_SIGMAS = 8.0


def slope(fn: str, x: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The steepest slope of an activation anywhere within K standard deviations of x: how much an
    input error can grow through it there (0 where the activation is flat, as ReLU below zero)."""
    lo, hi = x - TOLERANCE_SIGMAS * sigma, x + TOLERANCE_SIGMAS * sigma
    if fn == "relu":
        return (hi > 0).astype(np.float64)
    if fn == "relu6":
        return ((hi > 0) & (lo < 6)).astype(np.float64)
    if fn == "hsigmoid":
        return ((hi > -3) & (lo < 3)) / 6.0
    if fn == "hswish":  # slope 0 below −3, (2x + 3)/6 between, 1 above 3: at most 1.5, just below 3

        def at(v):
            return np.where(v < -3, 0.0, np.where(v > 3, 1.0, np.abs(2 * v + 3) / 6))

        steepest = np.maximum(at(lo), at(hi))
        steepest = np.where((lo < -3) & (hi > -3), np.maximum(steepest, 0.5), steepest)  # −0.5 just above −3
        return np.where((lo < 3) & (hi > 3), 1.5, steepest)
    if fn == "sigmoid":
        return np.full_like(x, 0.25)
    return np.ones_like(x)  # identity


@dataclass(frozen=True)
class Precision:
    """Unit roundoffs of one way of evaluating the network."""

    accumulate: float  # sums inside an op
    output: float  # every op's result
    weights: float  # stored weights (0: exact)


FLOAT32 = Precision(FP32_U, FP32_U, FP32_U)


class RoundingVariance(Interpreter):
    """Runs the IR in float64 and carries, beside each value, the variance of a rounded evaluation's
    error in it. run_node returns the value; `variances` holds the rest."""

    def __init__(self, graph: Graph, precision: Precision):
        super().__init__(graph, np.float64)
        self.precision = precision
        self.variances: dict[str, np.ndarray] = {}
        self._users_left = {n: len(graph.users(n)) for n in graph}

    def run_node(self, name: str, node: Node, xs: list[np.ndarray]) -> np.ndarray:
        y = super().run_node(name, node, xs)
        p = self.precision
        in_vars = [self.variances[q] for q in self.graph.inputs_of(name)]
        params = self.params(node)
        if node.op == "input":
            var = (p.output * xs[0]) ** 2
        elif node.op in ("conv", "fc"):
            var = self._linear(node, xs[0], in_vars[0], params)
            fn = node.attrs.get("fused_act")
            if fn is not None:
                pre = OPS[node.op].run({**node.attrs, "fused_act": None}, params, xs)
                var = slope(fn, pre, np.sqrt(var)) ** 2 * var
        elif node.op == "batchnorm":
            scale = params["gamma"] / np.sqrt(params["var"] + node.attrs["eps"])
            s = scale.reshape(1, -1, *[1] * (xs[0].ndim - 2))
            var = s**2 * in_vars[0] + (p.output * s * xs[0]) ** 2
        elif node.op == "act":
            var = slope(node.attrs["fn"], xs[0], np.sqrt(in_vars[0])) ** 2 * in_vars[0]
        elif node.op == "add":
            var = sum(in_vars)
        elif node.op == "mul":
            a, b = xs
            var = b**2 * in_vars[0] + a**2 * in_vars[1]
        elif node.op == "global_avgpool":
            hw = xs[0].shape[2] * xs[0].shape[3]
            var = in_vars[0].mean(axis=(2, 3), keepdims=True) / hw + p.accumulate**2 * (xs[0] ** 2).mean(
                axis=(2, 3), keepdims=True
            )
        elif node.op == "avgpool":
            a = node.attrs
            n = a["kernel"][0] * a["kernel"][1]
            var = kernels.avgpool(in_vars[0], a["kernel"], a["stride"]) / n + p.accumulate**2 * kernels.avgpool(
                xs[0] ** 2, a["kernel"], a["stride"]
            )
        elif node.op == "resize":
            # Each output is Σ wᵢxᵢ over 4 inputs with weights in [0, 1] (themselves rounded).
            size = node.attrs["size"]
            var = kernels.resize_bilinear(in_vars[0], size, squared=True) + (4 * p.accumulate) ** 2 * (
                kernels.resize_bilinear(xs[0] ** 2, size, squared=True)
            )
        elif node.op == "concat":
            var = np.concatenate(in_vars, axis=1)
        elif node.op == "per_anchor":
            var = kernels.per_anchor(in_vars[0], node.attrs["columns"])
        elif node.op == "flatten":
            var = in_vars[0].reshape(y.shape)
        elif node.op == "softmax":
            # dp_i = p_i (dz_i − Σ_j p_j dz_j), the terms taken as independent.
            var = y**2 * (in_vars[0] + (y**2 * in_vars[0]).sum(axis=1, keepdims=True))
        else:  # an op this model does not know: no allowance beyond its output's rounding
            var = np.zeros_like(y)
        self.variances[name] = var + (p.output * y) ** 2
        for q in self.graph.inputs_of(name):  # as the values are freed: no variance outlives its users
            self._users_left[q] -= 1
            if self._users_left[q] == 0 and q not in self.graph.outputs:
                del self.variances[q]
        return y

    def _linear(self, node: Node, x: np.ndarray, var_x: np.ndarray, params: dict) -> np.ndarray:
        a, p = node.attrs, self.precision
        # Variances need a few significant digits, not float64: float32 products are twice as fast.
        w2 = (params["weight"] ** 2).astype(np.float32)
        x, var_x = (x**2).astype(np.float32), var_x.astype(np.float32)
        if node.op == "conv":
            n = int(np.prod(params["weight"].shape[1:]))
            terms = kernels.conv2d(x, w2, None, a["stride"], a["pads"], a["groups"], dilation(a))
            carried = kernels.conv2d(var_x, w2, None, a["stride"], a["pads"], a["groups"], dilation(a))
        else:
            n = params["weight"].shape[1]
            terms = x @ w2.T
            carried = var_x @ w2.T
        return (carried + (p.accumulate**2 * n + p.weights**2) * terms).astype(np.float64)


# Where an output is near zero its own rounding bound is tiny, but errors made upstream are not
# independent of each other there; no element is held to less than this many float32 units of the
# output's largest magnitude.
FLOOR_ULPS = 64


def exceedance(actual: np.ndarray, expected: np.ndarray, allowed: np.ndarray) -> float:
    """The largest |actual − expected| as a multiple of what is allowed there (≤ 1 passes)."""
    expected = np.asarray(expected, np.float64)
    floor = max(FLOOR_ULPS * FP32_U * float(np.abs(expected).max()), np.finfo(np.float32).tiny)
    return float((np.abs(np.asarray(actual, np.float64) - expected) / np.maximum(allowed, floor)).max())


EXACT_INPUTS_FLOAT32 = Precision(FP32_U, FP32_U, 0.0)  # one op in float32, its inputs and weights as given


def float16_layer(graph: Graph, name: str, params: dict, xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(one op's exact result on these inputs, how far an evaluation that computes it in float32 and
    rounds to float16 may be from it, per element). A fused activation is a second op: its input is
    rounded to float16 too, and that error passes through it at its steepest slope nearby; a hard
    swish is two (hard sigmoid, then a product), so its gate's rounding is allowed for as well, and
    a hard sigmoid's slope is itself a float16 constant."""
    node = graph.node(name)
    model = RoundingVariance(graph, EXACT_INPUTS_FLOAT32)
    for producer in graph.inputs_of(name):
        model.variances[producer] = np.zeros_like(xs[graph.inputs_of(name).index(producer)])
    model.params = lambda _node: params
    y = model.run_node(name, node, xs)
    arithmetic = TOLERANCE_SIGMAS * np.sqrt(model.variances[name]) * (1 + FP16_U)
    allowed = arithmetic + FP16_U * np.abs(y) + FP16_TINY
    fn = node.attrs.get("fused_act") if node.op in ("conv", "fc") else None
    if fn is not None:
        pre = OPS[node.op].run({**node.attrs, "fused_act": None}, params, xs)
        pre_error = FP16_U * np.abs(pre) + FP16_TINY
        allowed = allowed + slope(fn, pre, pre_error / TOLERANCE_SIGMAS) * pre_error
    activation = fn if fn is not None else (node.attrs.get("fn") if node.op == "act" else None)
    if activation in ("hsigmoid", "hswish"):
        x = pre if fn is not None else xs[0]
        # The hard sigmoid's slope 1/6 is a float16 constant in such a program: off by HSIGMOID_SLOPE_ERROR.
        gate_error = HSIGMOID_SLOPE_ERROR * np.abs(x)
        if activation == "hswish":  # x times the gate, whose own rounding counts too
            gate_error = np.abs(x) * (gate_error + FP16_U) + FP16_TINY
        allowed = allowed + gate_error
    return y, allowed


HSIGMOID_SLOPE_ERROR = abs(float(np.float16(1.0 / 6.0)) - 1.0 / 6.0)
