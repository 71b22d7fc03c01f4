"""mnc's own layout: a parameter is named after its IR node (`<node>.<param>`), as `--save-weights`
and `mnc import` write it."""

from __future__ import annotations

from mnc.ir.graph import Graph
from mnc.weights.layouts.layout import Layout, Slot, param_names, param_nodes
from mnc.weights.node_names import FC, checkpoint_key, is_block_node


def _slots(graph: Graph, keys: list[str]) -> list[Slot]:
    return [Slot(checkpoint_key(n, p), n, p) for n in param_nodes(graph) for p in param_names(graph, n)]


def _classes(tensors: dict) -> int | None:
    """The rows of the one fully connected layer made by the prelude's `fc` block, if there is one."""
    fcs = [k for k in tensors if k.endswith(checkpoint_key(f".{FC}", "weight"))]
    return int(tensors[fcs[-1]].shape[0]) if len(fcs) == 1 else None


MNC = Layout(
    "mnc",
    "mnc's own names: '<IR node>.<param>' (what --save-weights writes)",
    detect=lambda keys: any(is_block_node(k) for k in keys),
    slots=_slots,
    classes=_classes,
)
