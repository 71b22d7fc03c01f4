"""Weight layouts: how the tensor names of a checkpoint map onto IR nodes and parameters.

A layout walks the IR's own structure (its blocks and their layers, in order) and says which
tensor name feeds each parameter. Shapes are then checked against the op registry.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from mnc.errors import InputError
from mnc.ir.graph import Graph


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
    slots: Callable[[Graph, list[str]], list[Slot]]  # (the network, the file's tensor names in order)
    classes: Callable[[dict], int | None]
    ignored: Callable[[str], bool] = lambda key: False


def _param_nodes(graph: Graph) -> list[str]:
    return [n for n in graph.topo() if graph.param_shapes(n)]


def _param_names(graph: Graph, node: str) -> list[str]:
    return list(graph.param_shapes(node))


# ---- mnc: IR node names, as `--save-weights` writes them ---------------------------------------


def _mnc_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    return [Slot(f"{n}.{p}", n, p) for n in _param_nodes(graph) for p in _param_names(graph, n)]


def _mnc_classes(tensors: dict) -> int | None:
    fcs = [k for k in tensors if k.endswith(".fc.weight")]
    return int(tensors[fcs[-1]].shape[0]) if len(fcs) == 1 else None


MNC = Layout(
    "mnc",
    "mnc's own names: '<IR node>.<param>' (what --save-weights writes)",
    detect=lambda keys: any(re.match(r"stage\d+\.block\d+\.", k) for k in keys),
    slots=_mnc_slots,
    classes=_mnc_classes,
)


# ---- torchvision MobileNetV2 -------------------------------------------------------------------
# features.0 = stem Conv2dNormActivation (.0 conv, .1 bn); features.1…17 = InvertedResidual
# (.conv.k.0 / .conv.k.1 for each conv+bn+act, then .conv.m linear projection and .conv.m+1 bn);
# features.18 = last 1×1 Conv2dNormActivation; classifier.1 = Linear (classifier.0 is Dropout).

BN_NAMES = {"gamma": "weight", "beta": "bias", "mean": "running_mean", "var": "running_var"}


def _blocks(graph: Graph) -> "OrderedDict[str, list[str]]":
    """Parameter-bearing nodes grouped by block (`stageS.blockJ`), in graph order."""
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for n in _param_nodes(graph):
        grouped.setdefault(".".join(n.split(".")[:2]), []).append(n)
    return grouped


def _tv_v2_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    slots: list[Slot] = []
    feature = 0
    for block, nodes in _blocks(graph).items():
        convs = [n for n in nodes if graph.node(n).op == "conv"]
        fcs = [n for n in nodes if graph.node(n).op == "fc"]
        if fcs and not convs and len(fcs) == 1:
            slots += [Slot(f"classifier.1.{p}", fcs[0], p) for p in _param_names(graph, fcs[0])]
            continue
        if len(convs) == 1:
            prefixes = [f"features.{feature}.0"]
            bn_prefixes = [f"features.{feature}.1"]
        elif len(convs) in (2, 3):
            k = len(convs) - 1
            prefixes = [f"features.{feature}.conv.{i}.0" for i in range(k)] + [f"features.{feature}.conv.{k}"]
            bn_prefixes = [f"features.{feature}.conv.{i}.1" for i in range(k)] + [f"features.{feature}.conv.{k + 1}"]
        else:
            node = graph.node(nodes[0])
            raise InputError(
                f"the torchvision MobileNetV2 layout cannot map block '{block}' "
                f"({len(convs)} convolutions, {len(fcs)} fully connected)",
                node.src,
            )
        for conv, prefix, bn_prefix in zip(convs, prefixes, bn_prefixes):
            slots += [Slot(f"{prefix}.{p}", conv, p) for p in _param_names(graph, conv)]
            bn = f"{conv}.bn"
            if bn in graph:
                slots += [Slot(f"{bn_prefix}.{BN_NAMES[p]}", bn, p) for p in _param_names(graph, bn)]
        feature += 1
    return slots


TORCHVISION_MOBILENET_V2 = Layout(
    "torchvision_mobilenet_v2",
    "torchvision.models.mobilenet_v2 state dict",
    detect=lambda keys: (
        "features.0.0.weight" in keys
        and "classifier.1.weight" in keys
        and any(re.fullmatch(r"features\.\d+\.conv\.\d+\.0\.weight", k) for k in keys)
    ),
    slots=_tv_v2_slots,
    classes=lambda tensors: int(tensors["classifier.1.weight"].shape[0]) if "classifier.1.weight" in tensors else None,
    ignored=lambda key: key.endswith(".num_batches_tracked"),
)

# ---- torchvision MobileNetV3 (large and small) -------------------------------------------------
# features.0 = stem Conv2dNormActivation; features.1… = InvertedResidual, whose `block` holds, in
# order, Conv2dNormActivation units (.0 conv, .1 bn) for expansion and depthwise, a
# SqueezeExcitation (fc1, fc2: 1×1 convs with bias), and the projection unit; then the last 1×1
# Conv2dNormActivation; classifier.0 and classifier.3 are the Linear layers (1 is Hardswish, 2 Dropout).


def _tv_v3_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    slots: list[Slot] = []
    feature = 0
    classifiers = iter(("classifier.0", "classifier.3"))
    for nodes in _blocks(graph).values():
        convs = [n for n in nodes if graph.node(n).op == "conv"]
        fcs = [n for n in nodes if graph.node(n).op == "fc"]
        if fcs and not convs and len(fcs) == 1:
            prefix = next(classifiers, None)
            if prefix is None:
                raise InputError(
                    "the torchvision MobileNetV3 layout has two fully connected layers; this network has more",
                    graph.node(fcs[0]).src,
                )
            slots += [Slot(f"{prefix}.{p}", fcs[0], p) for p in _param_names(graph, fcs[0])]
            continue
        if len(convs) == 1:
            slots += _conv_bn_slots(graph, convs[0], f"features.{feature}")
        else:
            unit = 0
            for conv in convs:
                se = conv.rsplit(".", 2)
                if len(se) == 3 and se[1] == "se" and se[2] in ("fc1", "fc2"):  # …blockJ.se.fc1
                    slots += [
                        Slot(f"features.{feature}.block.{unit}.{se[2]}.{p}", conv, p) for p in _param_names(graph, conv)
                    ]
                    unit += se[2] == "fc2"
                    continue
                slots += _conv_bn_slots(graph, conv, f"features.{feature}.block.{unit}")
                unit += 1
        feature += 1
    return slots


def _conv_bn_slots(graph: Graph, conv: str, prefix: str) -> list[Slot]:
    slots = [Slot(f"{prefix}.0.{p}", conv, p) for p in _param_names(graph, conv)]
    bn = f"{conv}.bn"
    if bn in graph:
        slots += [Slot(f"{prefix}.1.{BN_NAMES[p]}", bn, p) for p in _param_names(graph, bn)]
    return slots


TORCHVISION_MOBILENET_V3 = Layout(
    "torchvision_mobilenet_v3",
    "torchvision.models.mobilenet_v3_large / mobilenet_v3_small state dict",
    detect=lambda keys: (
        "features.0.0.weight" in keys
        and "classifier.3.weight" in keys
        and any(re.fullmatch(r"features\.\d+\.block\.\d+\.0\.weight", k) for k in keys)
    ),
    slots=_tv_v3_slots,
    classes=lambda tensors: int(tensors["classifier.3.weight"].shape[0]) if "classifier.3.weight" in tensors else None,
    ignored=lambda key: key.endswith(".num_batches_tracked"),
)

# ---- Keras ------------------------------------------------------------------------------------
# mnc/weights/keras.py names tensors '<Keras layer>/<variable>' in the model's layer order, which is
# the order of computation; the network's weighted layers are matched with them one by one, each
# with its kind: a convolution takes a Conv2D or DepthwiseConv2D kernel, a batch norm a
# BatchNormalization, a fully connected layer a Dense kernel (or a 1×1 Conv2D: Keras's MobileNet
# classifier). Names and shapes are then checked as for every layout.

KERAS_VARIABLES = {
    "conv": {"weight": ("kernel", "depthwise_kernel"), "bias": ("bias",)},
    "batchnorm": {"gamma": ("gamma",), "beta": ("beta",), "mean": ("moving_mean",), "var": ("moving_variance",)},
    "fc": {"weight": ("kernel",), "bias": ("bias",)},
}
_KERAS_KIND = {"kernel": "conv", "depthwise_kernel": "conv", "moving_mean": "batchnorm"}


def _keras_layers(keys: list[str]) -> "OrderedDict[str, dict[str, str]]":
    grouped: OrderedDict[str, dict[str, str]] = OrderedDict()
    for key in keys:
        layer, _, variable = key.rpartition("/")
        grouped.setdefault(layer, {})[variable] = key
    return grouped


def _keras_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    slots: list[Slot] = []
    layers = iter(_keras_layers(keys).items())
    for node in _param_nodes(graph):
        op = graph.node(node).op
        layer, variables = next(layers, ("(no Keras layer left)", {}))  # reported as missing, with shapes
        if not variables:
            slots += [Slot(f"{layer}/{param}", node, param) for param in _param_names(graph, node)]
            continue
        kind = next((_KERAS_KIND[v] for v in variables if v in _KERAS_KIND), None)
        if kind != op and not (op == "fc" and kind == "conv" and "depthwise_kernel" not in variables):
            raise InputError(
                f"the Keras model's layer '{layer}' ({', '.join(variables)}) is where this network has "
                f"layer '{node}' ({op}): the spec does not describe this model",
                graph.node(node).src,
            )
        for param in _param_names(graph, node):
            name = next((variables[v] for v in KERAS_VARIABLES[op][param] if v in variables), f"{layer}/{param}")
            slots.append(Slot(name, node, param))
    return slots


def _keras_classes(tensors: dict) -> int | None:
    kernels = [k for k in tensors if k.endswith("/kernel")]
    return int(tensors[kernels[-1]].shape[0]) if kernels else None


KERAS = Layout(
    "keras",
    "a Keras model (.keras or .h5): its layers in order, Conv2D/DepthwiseConv2D, BatchNormalization, Dense",
    detect=lambda keys: any(k.endswith("/moving_mean") for k in keys),
    slots=_keras_slots,
    classes=_keras_classes,
)

LAYOUTS = {layout.name: layout for layout in (MNC, TORCHVISION_MOBILENET_V2, TORCHVISION_MOBILENET_V3, KERAS)}


def choose_layout(keys: set[str], name: str | None, loc) -> Layout:
    if name is not None:
        if name not in LAYOUTS:
            from mnc.errors import did_you_mean

            raise InputError(
                f"--weights-layout: unknown layout '{name}'"
                + did_you_mean(name, LAYOUTS)
                + f"; layouts are {', '.join(LAYOUTS)}"
            )
        return LAYOUTS[name]
    matches = [layout for layout in LAYOUTS.values() if layout.detect(keys)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        sample = ", ".join(sorted(keys)[:3])
        raise InputError(
            f"cannot tell the layout of these weights (tensors such as {sample}); "
            f"choose one with --weights-layout ({', '.join(LAYOUTS)})",
            loc,
        )
    raise InputError(
        f"these weights fit several layouts ({', '.join(m.name for m in matches)}); choose one with --weights-layout",
        loc,
    )
