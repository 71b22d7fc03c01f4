"""What a rewrite is (mnc/passes/rewrites.py runs them) and how each region it makes is checked.

A rewrite returns the regions it changed (`Region`): the nodes of the rewritten graph that
compute what some nodes of the original computed, from the same value. Each region is checked
where it is made, cheaply: both sides are evaluated node by node by mnc's interpreter, in float64,
on a seeded input of the region's own shape (not the network), and must agree within what storing
the rewrite's constants in float32 explains (each op's error model with float32 constants and
float64 arithmetic, TOLERANCE_SIGMAS standard deviations). A region that does not is a bug in mnc:
RewriteError (exit 70), naming the rewrite, the target, the layer and its spec line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mnc.errors import MncError
from mnc.ir.graph import Graph
from mnc.ir.interpreter import Interpreter
from mnc.ir.ops import OPS
from mnc.ir.roundoff import FP32_U, TOLERANCE_SIGMAS, Precision

SEED = 0  # of the inputs regions are checked on
SAMPLES = 2
# The interpreter's float64 arithmetic, and constants a rewrite computes in float64 and stores in float32.
CHECKED = Precision(accumulate=2.0**-53, output=2.0**-53, weights=FP32_U)


class RewriteError(MncError):
    """A rewrite broke the graph or changed what a region computes: a bug in mnc."""


def same_input(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Values either side of 0 wide enough to reach an activation's bends (ReLU6's at 0 and 6)."""
    x = rng.normal(0.0, 4.0, (SAMPLES, *shape))
    return x, x


@dataclass(frozen=True)
class Region:
    """One place a rewrite changed. `new`: nodes of the rewritten graph, in order; `old`: the nodes of
    the original graph whose last value the last of `new` stands for, in order. Each side reads one
    value from outside (or is fed, where it starts at an input node); `feed(rng, shape)` gives
    (what the new side reads, what the old side reads), shape being the old side's input's."""

    new: tuple[str, ...]
    old: tuple[str, ...]
    feed: Callable[[np.random.Generator, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = same_input


@dataclass(frozen=True)
class Rewrite:
    name: str
    summary: str
    run: Callable[..., list[Region]]  # run(graph, **options) → regions; rewrites the graph in place
    # Activations a target that asks for this rewrite need not lower (the rewrite leaves none).
    removes_activations: tuple[str, ...] = ()


def check_region(original: Graph, rewritten: Graph, region: Region, name: str, target: str) -> float:
    """The region's largest difference over its bound (≤ 1), else RewriteError."""
    first = original.node(region.old[0])
    entry = region.old[0] if first.op == "input" else original.inputs_of(region.old[0])[0]
    fed_new, fed_old = region.feed(np.random.default_rng(SEED), original.node(entry).shape)
    new, new_var = _evaluate(rewritten, region.new, fed_new)
    old, old_var = _evaluate(original, region.old, fed_old)
    allowed = TOLERANCE_SIGMAS * np.sqrt(new_var + old_var)
    difference = np.abs(new - old)
    if difference.shape != allowed.shape or not np.all(difference <= allowed):
        last = original.node(region.old[-1])
        worst = float(np.max(difference - allowed)) if difference.shape == allowed.shape else np.inf
        raise RewriteError(
            f"rewrite '{name}' for target '{target}' changed what layer '{region.old[-1]}' computes: its "
            f"nodes {', '.join(region.new)} differ from it by up to {worst:.3g} beyond what float32 constants "
            "explain, on a seeded input",
            last.src,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(allowed > 0, difference / allowed, np.where(difference > 0, np.inf, 0.0))
    return float(ratio.max(initial=0.0))


def _evaluate(graph: Graph, names: tuple[str, ...], fed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The last node's value and the variance of its rounding error (CHECKED), evaluated node by node
    from `fed`, the value the first node reads (or is fed, an input)."""
    interpreter = Interpreter(graph)
    values, variances = {}, {}
    for name in names:
        node = graph.node(name)
        producers = [p for p in graph.inputs_of(name) if p in values]
        if node.op == "input" or len(producers) < len(graph.inputs_of(name)):
            if producers or name != names[0]:
                raise RewriteError(f"region {names} reads a value from outside it at '{name}'")
            xs, in_vars = [np.asarray(fed, np.float64)], [np.zeros(np.shape(fed))]
        else:
            xs, in_vars = [values[p] for p in producers], [variances[p] for p in producers]
        y = interpreter.run_node(name, node, xs)
        params = interpreter.params(node)
        var = OPS[node.op].error(node, xs, in_vars, y, params, CHECKED) + (CHECKED.output * y) ** 2
        values[name], variances[name] = y, np.broadcast_to(var, y.shape)
    return values[names[-1]], variances[names[-1]]
