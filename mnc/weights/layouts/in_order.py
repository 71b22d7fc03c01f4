"""Layouts that match weighted layers in order: Keras models and timm state dicts.

A Keras file (mnc/weights/keras.py names its tensors '<layer>/<variable>') and a timm state dict
('<module>.<parameter>') both list their weighted layers in the order of computation; the network's
nodes with parameters are matched with them one by one, each with its kind: a kernel fills any
weighted op (a fully connected layer takes a dense kernel or a 1×1 convolution's: Keras's MobileNet
classifier, timm's conv_head), a batch norm a batch norm. Which parameters a node has, and in what
order, is the op registry's (`Graph.param_shapes`); a framework only says what it calls each. Names
and shapes are then checked as for every layout.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from mnc.errors import InputError
from mnc.ir.graph import Graph
from mnc.weights.layouts.layout import (
    PYTORCH_NAMES,
    Layout,
    Slot,
    classifier_rows,
    param_names,
    param_nodes,
    pytorch_ignored,
    weighted,
)


@dataclass(frozen=True)
class InOrder:
    separator: str  # between layer and variable in a tensor's name
    variables: dict[str, tuple[str, ...]]  # IR param → the file's variable names that may hold it
    kinds: dict[str, str]  # a variable that tells the layer's kind → IR op (the first found decides)
    framework: str
    order: Callable[[list[str]], list[str]] = list  # the keys in the order of computation
    only: dict[str, tuple[str, ...]] = field(default_factory=dict)  # a variable → the only IR ops it fills

    def layers(self, keys: list[str]) -> "OrderedDict[str, dict[str, str]]":
        grouped: OrderedDict[str, dict[str, str]] = OrderedDict()
        for key in self.order(keys):
            layer, _, variable = key.rpartition(self.separator)
            grouped.setdefault(layer, {})[variable] = key
        return OrderedDict((k, v) for k, v in grouped.items() if any(name in self.kinds for name in v))

    def slots(self, graph: Graph, keys: list[str]) -> list[Slot]:
        slots: list[Slot] = []
        layers = iter(self.layers(keys).items())
        for node in param_nodes(graph):
            op = graph.node(node).op
            layer, variables = next(layers, (f"(no {self.framework} layer left)", {}))  # reported as missing
            if not variables:
                slots += [Slot(f"{layer}{self.separator}{p}", node, p) for p in param_names(graph, node)]
                continue
            kind = next(op for v, op in self.kinds.items() if v in variables)
            if kind != op and not (weighted(kind) and weighted(op)):
                raise InputError(
                    f"the {self.framework} model's layer '{layer}' ({', '.join(variables)}) is where this network "
                    f"has layer '{node}' ({op}): the spec does not describe this model",
                    graph.node(node).src,
                )
            for param in param_names(graph, node):
                found = next((variables[v] for v in self._names(op, param) if v in variables), None)
                slots.append(Slot(found or f"{layer}{self.separator}{param}", node, param))
        return slots

    def _names(self, op: str, param: str) -> list[str]:
        return [v for v in self.variables[param] if op in self.only.get(v, (op,))]


KERAS_ORDER = InOrder(
    "/",
    {
        "weight": ("kernel", "depthwise_kernel"),
        "bias": ("bias",),
        "gamma": ("gamma",),
        "beta": ("beta",),
        "mean": ("moving_mean",),
        "var": ("moving_variance",),
    },
    {"kernel": "conv", "depthwise_kernel": "conv", "moving_mean": "batchnorm"},
    "Keras",
    only={"depthwise_kernel": ("conv",)},  # a Dense layer's kernel is only ever `kernel`
)
KERAS = Layout(
    "keras",
    "a Keras model (.keras or .h5): its layers in order, Conv2D/DepthwiseConv2D, BatchNormalization, Dense",
    detect=lambda keys: any(k.endswith("/moving_mean") for k in keys),
    slots=KERAS_ORDER.slots,
    classes=lambda tensors: _last_kernel_rows(tensors, "/kernel"),
)


def _last_kernel_rows(tensors: dict, suffix: str) -> int | None:
    kernels = [k for k in tensors if k.endswith(suffix)]
    return int(tensors[kernels[-1]].shape[0]) if kernels else None


# A state dict's order is not to be trusted (safetensors sorts its names): timm's module names give
# it. An inverted residual computes conv_pw, conv_dw, its squeeze-excite, conv_pwl, with bn1…bn3 after
# each; a depthwise-separable block conv_dw, squeeze-excite, conv_pw, with bn1 and bn2.
_TIMM_TOP = {"conv_stem": 0, "bn1": 1, "blocks": 2, "conv_head": 3, "bn2": 4, "classifier": 5}
_TIMM_INVERTED = ("conv_pw", "bn1", "conv_dw", "bn2", "se.conv_reduce", "se.conv_expand", "conv_pwl", "bn3")
_TIMM_SEPARABLE = ("conv_dw", "bn1", "se.conv_reduce", "se.conv_expand", "conv_pw", "bn2")
_TIMM_CONV = ("conv", "bn1")


def _timm_order(keys: list[str]) -> list[str]:
    units: dict[str, tuple[str, ...]] = {}  # blocks.S.B → its kind's module order
    for key in keys:
        parts = key.split(".")
        if parts[0] == "blocks" and len(parts) >= 5:
            block, module = ".".join(parts[:3]), parts[3]
            if module == "conv_pwl":
                units[block] = _TIMM_INVERTED
            elif module == "conv_dw" and units.get(block) is not _TIMM_INVERTED:
                units[block] = _TIMM_SEPARABLE

    def rank(key: str) -> tuple:
        parts = key.split(".")
        top = _TIMM_TOP.get(parts[0], len(_TIMM_TOP))
        if parts[0] != "blocks" or len(parts) < 5 or not (parts[1].isdigit() and parts[2].isdigit()):
            return (top, 0, 0, 0, key)
        order, module = units.get(".".join(parts[:3]), _TIMM_CONV), ".".join(parts[3:-1])
        return (top, int(parts[1]), int(parts[2]), order.index(module) if module in order else len(order), key)

    return sorted(keys, key=rank)


TIMM_ORDER = InOrder(
    ".",
    {param: (name,) for param, name in PYTORCH_NAMES.items()},
    {"running_mean": "batchnorm", "weight": "conv"},  # a batch norm has a weight too: running_mean decides
    "timm",
    order=_timm_order,
)


def _timm_conventions(keys: set[str]) -> dict:
    """timm's MobileNets are PyTorch's: symmetric padding, ε 1e-5; V1 and V2 use ReLU6 throughout
    (V3 mixes activations, which its blocks say)."""
    conventions = {"padding": "symmetric", "batchnorm_eps": 1e-5}
    if not any(".se." in k for k in keys):
        conventions["activation"] = "relu6"
    return conventions


TIMM = Layout(
    "timm",
    "a timm MobileNetV1/V2/V3 state dict (conv_stem, blocks.S.B…, conv_head, classifier)",
    detect=lambda keys: "conv_stem.weight" in keys and any(k.startswith("blocks.0.0.") for k in keys),
    slots=TIMM_ORDER.slots,
    classes=classifier_rows("classifier.weight"),
    ignored=pytorch_ignored,
    conventions=_timm_conventions,
)
