"""What a weight layout is: for a network, which tensor of a checkpoint fills which parameter of
which IR node. Layouts walk the IR's own structure; shapes are then checked against the op registry
(mnc/weights/load.py)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Mapping

from mnc.ir.graph import Graph
from mnc.ir.ops import OPS
from mnc.weights.node_names import block_of, row_order

# A checkpoint's tensors as layouts see them: name → shape, in the file's order.
Tensors = Mapping[str, tuple]


@dataclass(frozen=True)
class Slot:
    key: str  # tensor name in the file
    node: str  # IR node
    param: str  # IR parameter


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    detect: Callable[[set[str]], bool]
    slots: Callable[[Graph, Tensors], list[Slot]]  # (the network, the file's tensor names and shapes in order)
    classes: Callable[[dict], int | None]
    ignored: Callable[[str], bool] = lambda key: False
    # Settings the framework's layers compute with, which a build applies to the spec (from the names).
    conventions: Callable[[set[str]], dict] = lambda keys: {}


# PyTorch's name of each IR parameter (torchvision's and timm's modules: Conv2d, Linear, BatchNorm2d).
PYTORCH_NAMES = {
    "weight": "weight",
    "bias": "bias",
    "gamma": "weight",
    "beta": "bias",
    "mean": "running_mean",
    "var": "running_var",
}


def pytorch_ignored(key: str) -> bool:
    """A BatchNorm2d's counter of training steps: no parameter of the network."""
    return key.endswith(".num_batches_tracked")


def classifier_rows(key: str, per: int = 1) -> Callable[[dict], int | None]:
    """A layout's `classes`: the rows of the checkpoint's classifier tensor `key` (`per` rows a class),
    or None for a checkpoint without one."""
    return lambda tensors: int(tensors[key].shape[0]) // per if key in tensors else None


def weighted(op: str) -> bool:
    """Whether an op computes with a weight tensor (a convolution's or a dense layer's kernel), as
    opposed to a batch norm's per-channel scale and statistics: a framework's kernel may fill any
    weighted op (a 1×1 convolution's kernel a fully connected layer's weight)."""
    return "weight" in OPS[op].slots


def param_nodes(graph: Graph) -> list[str]:
    """The nodes with parameters, in graph order."""
    return [n for n in graph.topo() if graph.param_shapes(n)]


def param_names(graph: Graph, node: str) -> list[str]:
    """A node's parameters, in the op registry's order."""
    return list(graph.param_shapes(node))


def blocks(graph: Graph) -> "OrderedDict[str, list[str]]":
    """Parameter-bearing nodes grouped by block (`stageS.blockJ`), in graph order."""
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for n in param_nodes(graph):
        grouped.setdefault(block_of(n), []).append(n)
    # In the order of the table's rows: a branch reading an early tap may come early in graph order.
    return OrderedDict(sorted(grouped.items(), key=lambda kv: row_order(kv[0])))
