"""torchvision's MobileNetV2 and MobileNetV3 state dicts: the network's blocks, in the order of the
table's rows, are torchvision's `features.N`; a block's convolutions (and their batch norms) are
that feature's units in order."""

from __future__ import annotations

import re

from mnc.errors import InputError
from mnc.ir.graph import Graph
from mnc.weights.layouts.layout import (
    PYTORCH_NAMES,
    Layout,
    Slot,
    blocks,
    classifier_rows,
    param_names,
    pytorch_ignored,
)
from mnc.weights.node_names import batchnorm_of, se_conv

# ---- torchvision MobileNetV2 -------------------------------------------------------------------
# features.0 = stem Conv2dNormActivation (.0 conv, .1 bn); features.1…17 = InvertedResidual
# (.conv.k.0 / .conv.k.1 for each conv+bn+act, then .conv.m linear projection and .conv.m+1 bn);
# features.18 = last 1×1 Conv2dNormActivation; classifier.1 = Linear (classifier.0 is Dropout).


def _module_slots(graph: Graph, node: str, module: str) -> list[Slot]:
    """A node's parameters under a PyTorch module's name."""
    return [Slot(f"{module}.{PYTORCH_NAMES[p]}", node, p) for p in param_names(graph, node)]


def conv_bn_slots(graph: Graph, conv: str, module: str, bn_module: str | None) -> list[Slot]:
    """A convolution's parameters, and its batch norm's if it has one and `bn_module` names it."""
    slots = _module_slots(graph, conv, module)
    bn = batchnorm_of(conv)
    if bn_module is not None and bn in graph:
        slots += _module_slots(graph, bn, bn_module)
    return slots


def _torchvision_layout(name: str, description: str, classifier: str, unit: str, slots) -> Layout:
    """A torchvision MobileNet classifier's state dict, told by its stem, its classifier (whose rows
    are the classes) and the units of its blocks (`features.N.<unit>.M`)."""
    weight = f"{classifier}.weight"
    pattern = re.compile(rf"features\.\d+\.{unit}\.\d+\.0\.weight")
    return Layout(
        name,
        description,
        detect=lambda keys: (
            "features.0.0.weight" in keys and weight in keys and any(pattern.fullmatch(k) for k in keys)
        ),
        slots=slots,
        classes=classifier_rows(weight),
        ignored=pytorch_ignored,
    )


def _v2_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    slots: list[Slot] = []
    feature = 0
    for block, nodes in blocks(graph).items():
        convs = [n for n in nodes if graph.node(n).op == "conv"]
        fcs = [n for n in nodes if graph.node(n).op == "fc"]
        if fcs and not convs and len(fcs) == 1:
            slots += _module_slots(graph, fcs[0], "classifier.1")
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
            slots += conv_bn_slots(graph, conv, prefix, bn_prefix)
        feature += 1
    return slots


TORCHVISION_MOBILENET_V2 = _torchvision_layout(
    "torchvision_mobilenet_v2", "torchvision.models.mobilenet_v2 state dict", "classifier.1", "conv", _v2_slots
)

# ---- torchvision MobileNetV3 (large and small) -------------------------------------------------
# features.0 = stem Conv2dNormActivation; features.1… = InvertedResidual, whose `block` holds, in
# order, Conv2dNormActivation units (.0 conv, .1 bn) for expansion and depthwise, a
# SqueezeExcitation (fc1, fc2: 1×1 convs with bias), and the projection unit; then the last 1×1
# Conv2dNormActivation; classifier.0 and classifier.3 are the Linear layers (1 is Hardswish, 2 Dropout).


def v3_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    slots: list[Slot] = []
    feature = 0
    classifiers = iter(("classifier.0", "classifier.3"))
    for nodes in blocks(graph).values():
        convs = [n for n in nodes if graph.node(n).op == "conv"]
        fcs = [n for n in nodes if graph.node(n).op == "fc"]
        if fcs and not convs and len(fcs) == 1:
            prefix = next(classifiers, None)
            if prefix is None:
                raise InputError(
                    "the torchvision MobileNetV3 layout has two fully connected layers; this network has more",
                    graph.node(fcs[0]).src,
                )
            slots += _module_slots(graph, fcs[0], prefix)
            continue
        if len(convs) == 1:
            slots += conv_bn_slots(graph, convs[0], f"features.{feature}.0", f"features.{feature}.1")
        else:
            unit = 0
            for conv in convs:
                fc = se_conv(conv)
                if fc is not None:  # a SqueezeExcitation module: fc1 and fc2 in one unit
                    slots += _module_slots(graph, conv, f"features.{feature}.block.{unit}.{fc}")
                    unit += fc == "fc2"
                    continue
                prefix = f"features.{feature}.block.{unit}"
                slots += conv_bn_slots(graph, conv, f"{prefix}.0", f"{prefix}.1")
                unit += 1
        feature += 1
    return slots


TORCHVISION_MOBILENET_V3 = _torchvision_layout(
    "torchvision_mobilenet_v3",
    "torchvision.models.mobilenet_v3_large / mobilenet_v3_small state dict",
    "classifier.3",
    "block",
    v3_slots,
)
