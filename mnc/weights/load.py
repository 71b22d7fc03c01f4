"""Put a checkpoint's tensors into an IR graph, checking every name and shape."""

from __future__ import annotations

from math import prod

from mnc.errors import Collector, Diagnostic, InputError, Loc
from mnc.ir.graph import Graph
from mnc.weights.files import WeightsFile, as_float32
from mnc.weights.layouts import Layout

MAX_LISTED = 8  # per kind of problem; the rest are counted


class WeightsMismatch(InputError):
    """Names or shapes that do not fit the network; the compiler may add a hint (the α they fit)."""


def tensor_shapes(tensors: dict) -> dict[str, tuple]:
    """A checkpoint's tensors as a layout sees them: name → shape, in the file's order."""
    return {k: tuple(v.shape) for k, v in tensors.items()}


def layout_slots(graph: Graph, layout: Layout, weights: WeightsFile) -> list:
    """The layout's slots for this checkpoint; an error it raises without a place is put at the file."""
    try:
        return layout.slots(graph, tensor_shapes(weights.tensors))
    except InputError as exc:
        for diagnostic in exc.diagnostics:
            diagnostic.loc = diagnostic.loc or Loc.file(weights.path)
        raise WeightsMismatch(exc.diagnostics) from None


def expected_shapes(graph: Graph, layout: Layout, tensors: dict) -> dict[str, tuple]:
    shapes = {}
    for slot in layout.slots(graph, tensor_shapes(tensors)):
        shapes[slot.key] = tuple(graph.param_shapes(slot.node)[slot.param])
    return shapes


def load_weights(graph: Graph, weights: WeightsFile, layout: Layout) -> None:
    """Set every parameter of `graph` from `weights`. Any missing, unexpected or misshapen
    tensor is an InputError naming the tensor, both shapes, the IR node and its spec line."""
    file_loc = Loc.file(weights.path)
    problems = Collector()
    slots = layout_slots(graph, layout, weights)
    wanted = {s.key for s in slots}
    loaded: dict[str, dict] = {}
    missing, mismatched = [], []
    for slot in slots:
        data = graph.node(slot.node)
        shape = tuple(graph.param_shapes(slot.node)[slot.param])
        what = f"layer '{slot.node}' ({data.op} {slot.param})"
        if slot.key not in weights.tensors:
            missing.append(
                Diagnostic(f"{weights.path}: no tensor '{slot.key}' for {what}, shape {_fmt(shape)}", data.src)
            )
            continue
        array = weights.tensors[slot.key]
        if tuple(array.shape) != shape:
            # A fully connected layer stored as a 1×1 convolution (or the reverse) is the same weights.
            if prod(array.shape) == prod(shape) and array.shape[:1] == shape[:1] and data.op == "fc":
                array = array.reshape(shape)
            else:
                mismatched.append(
                    Diagnostic(
                        f"{weights.path}: tensor '{slot.key}' has shape {_fmt(array.shape)} but {what} needs "
                        f"{_fmt(shape)}",
                        data.src,
                    )
                )
                continue
        loaded.setdefault(slot.node, {})[slot.param] = as_float32(slot.key, array, file_loc)
    unexpected = sorted(k for k in weights.tensors if k not in wanted and not layout.ignored(k))
    for group in (mismatched, missing):
        problems.diagnostics += group[:MAX_LISTED]
        if len(group) > MAX_LISTED:
            problems.error(f"… and {len(group) - MAX_LISTED} more like the above", file_loc)
    if unexpected:
        listed = ", ".join(f"'{k}' {_fmt(weights.tensors[k].shape)}" for k in unexpected[:MAX_LISTED])
        more = f" and {len(unexpected) - MAX_LISTED} more" if len(unexpected) > MAX_LISTED else ""
        problems.error(
            f"{len(unexpected)} tensor(s) the network has no place for (layout '{layout.name}'): {listed}{more}",
            file_loc,
        )
    if problems.diagnostics:
        raise WeightsMismatch(problems.diagnostics)
    for node, params in loaded.items():
        graph.node(node).params = params


def _fmt(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"
