"""torchvision's detection and segmentation models on MobileNetV3-Large: SSDLite, LR-ASPP, DeepLabV3.

The backbone's blocks are named as in torchvision's MobileNetV3 (features.N…, torchvision.py), under
a prefix that depends on the model. The heads' layers are named in the spec by their block's layer
names (the blocks of examples/specs/{ssdlite320,lraspp,deeplabv3}_mobilenet_v3_large.mnet); the
tables below map those onto torchvision's modules.
"""

from __future__ import annotations

from typing import Callable

from mnc.errors import InputError
from mnc.ir.graph import Graph
from mnc.weights.layouts.layout import Layout, Slot, blocks, classifier_rows, pytorch_ignored
from mnc.weights.layouts.torchvision import conv_bn_slots, v3_slots
from mnc.weights.node_names import (
    EXPAND,
    MOBILENET_V3_LAYERS,
    activation_of,
    batchnorm_of,
    block_of,
    in_block,
    is_batchnorm,
    layer_of,
    without_batchnorm,
)

# A head block's layer → (its convolution's module, its batch norm's module or None).
Modules = dict[str, tuple[str, str | None]]

# The layer names of the example specs' head blocks.
LRASPP_HEAD: Modules = {
    "cbr": ("classifier.cbr.0", "classifier.cbr.1"),
    "scale": ("classifier.scale.1", None),
    "high_classifier": ("classifier.high_classifier", None),
    "low_classifier": ("classifier.low_classifier", None),
}
DEEPLABV3_ASPP: Modules = {
    **{f"b{i}": (f"classifier.0.convs.{i}.0", f"classifier.0.convs.{i}.1") for i in range(4)},
    "pooled": ("classifier.0.convs.4.1", "classifier.0.convs.4.2"),
    "project": ("classifier.0.project.0", "classifier.0.project.1"),
}
DEEPLABV3_ASPP_MARK = "b0"  # the layer that tells the ASPP block
DEEPLABV3_AFTER: list[Modules] = [{"conv": ("classifier.1", "classifier.2")}, {"conv": ("classifier.4", None)}]
SSDLITE_PREDICT = "predict"  # the layer that tells a predictor block (its other layer is `dw`)
SSDLITE_EXTRA = {"reduce": 0, "dw": 1, "expand": 2}  # an extra block's layers → their unit
SSDLITE_HEADS = {"bbox_regression": "regression_head", "cls_logits": "classification_head"}  # output → head


def _split_backbone(graph: Graph) -> tuple[list[list[str]], list[list[str]]]:
    """The leading blocks that are MobileNetV3 blocks, and the remaining blocks' parameter nodes."""
    grouped = list(blocks(graph).values())
    n = 0
    while n < len(grouped) and all(without_batchnorm(layer_of(node)) in MOBILENET_V3_LAYERS for node in grouped[n]):
        n += 1
    return grouped[:n], grouped[n:]


def _backbone_slots(graph: Graph, backbone: list[list[str]], rename: Callable[[str], str]) -> list[Slot]:
    nodes = set(node for block in backbone for node in block)
    slots = v3_slots(_Restricted(graph, nodes), [])
    return [Slot(rename(slot.key), slot.node, slot.param) for slot in slots]


class _Restricted:
    """The graph as the V3 layout sees it: only the backbone's parameter nodes."""

    def __init__(self, graph: Graph, nodes: set[str]):
        self.graph, self.nodes = graph, nodes

    def topo(self):
        return [n for n in self.graph.topo() if n in self.nodes or not self.graph.param_shapes(n)]

    def __getattr__(self, name):
        return getattr(self.graph, name)

    def __contains__(self, name):
        return name in self.graph


def _named_slots(graph: Graph, nodes: list[str], names: Modules) -> list[Slot]:
    """Slots of a head block whose layers have the given torchvision module names."""
    slots: list[Slot] = []
    for node in nodes:
        layer = layer_of(node)
        if is_batchnorm(layer) or graph.node(node).op != "conv":
            continue
        if layer not in names:
            raise InputError(
                f"the torchvision layout has no module for layer '{layer}' of this head ({', '.join(names)})",
                graph.node(node).src,
            )
        slots += conv_bn_slots(graph, node, *names[layer])
    return slots


def _lraspp_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    backbone, heads = _split_backbone(graph)
    slots = _backbone_slots(graph, backbone, lambda key: key.replace("features.", "backbone.", 1))
    for nodes in heads:
        slots += _named_slots(graph, nodes, LRASPP_HEAD)
    return slots


def _deeplabv3_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    backbone, heads = _split_backbone(graph)
    slots = _backbone_slots(graph, backbone, lambda key: key.replace("features.", "backbone.", 1))
    after = iter(DEEPLABV3_AFTER)
    for nodes in heads:
        if any(layer_of(n) == DEEPLABV3_ASPP_MARK for n in nodes):
            slots += _named_slots(graph, nodes, DEEPLABV3_ASPP)
        else:
            slots += _named_slots(graph, nodes, next(after, {}))
    return slots


def _ssdlite_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    backbone, heads = _split_backbone(graph)
    c4 = _c4_block(graph, backbone)

    def rename(key: str) -> str:
        # features.0 holds the blocks before C4 and C4's expansion layer, features.1 the rest.
        number, _, rest = key[len("features.") :].partition(".")
        block = int(number)
        if block < c4:
            return f"backbone.features.0.{block}.{rest}"
        if block == c4:
            unit, _, tail = rest[len("block.") :].partition(".")
            if unit == "0":
                return f"backbone.features.0.{block}.{tail}"
            return f"backbone.features.1.0.{unit}.{tail}"
        return f"backbone.features.1.{block - c4}.{rest}"

    slots = _backbone_slots(graph, backbone, rename)
    extra = 0
    for nodes in heads:
        if SSDLITE_PREDICT in {layer_of(n) for n in nodes}:
            head, level = _predictor(graph, nodes)
            prefix = f"head.{head}.module_list.{level}"
            slots += _named_slots(
                graph, nodes, {"dw": (f"{prefix}.0.0", f"{prefix}.0.1"), SSDLITE_PREDICT: (f"{prefix}.1", None)}
            )
        else:
            prefix = f"backbone.extra.{extra}"
            modules = {k: (f"{prefix}.{i}.0", f"{prefix}.{i}.1") for k, i in SSDLITE_EXTRA.items()}
            slots += _named_slots(graph, nodes, modules)
            extra += 1
    return slots


def _c4_block(graph: Graph, backbone: list[list[str]]) -> int:
    """The backbone block whose expansion layer feeds a detection predictor (the C4 tap)."""
    for i, nodes in enumerate(backbone):
        for node in nodes:
            if layer_of(node) == EXPAND and batchnorm_of(node) in graph:
                tapped = activation_of(node) if activation_of(node) in graph else batchnorm_of(node)
                if any(block_of(user) != block_of(node) for user in graph.users(tapped)):
                    return i
    raise InputError(
        "the torchvision SSDLite layout needs the C4 tap: a backbone block's expansion layer read by a head"
    )


def _predictor(graph: Graph, nodes: list[str]) -> tuple[str, int]:
    """(regression_head or classification_head, level) of a predictor block: which output its rows
    reach, and at which position of that output's concatenation."""
    block = block_of(nodes[0])
    rows = next((n for n in graph.topo() if in_block(n, block) and graph.node(n).op == "per_anchor"), None)
    concat = next((u for u in graph.users(rows) if graph.node(u).op == "concat"), None) if rows else None
    label = graph.output_labels.get(concat, "") if concat else ""
    if label not in SSDLITE_HEADS:
        raise InputError(
            "the torchvision SSDLite layout maps predictors whose rows are joined into the outputs "
            "bbox_regression and cls_logits",
            graph.node(nodes[0]).src,
        )
    return SSDLITE_HEADS[label], graph.inputs_of(concat).index(rows)


def _dense_layout(name: str, description: str, marker: str, slots, classes, ignored=()) -> Layout:
    return Layout(
        name,
        description,
        detect=lambda keys: marker in keys,
        slots=slots,
        classes=classes,
        ignored=lambda key: pytorch_ignored(key) or key.startswith(ignored),
    )


SSD_ANCHORS_PER_LOCATION = 6  # torchvision's DefaultBoxGenerator with aspect ratios (2, 3) on every level
TORCHVISION_SSDLITE = _dense_layout(
    "torchvision_ssdlite",
    "torchvision.models.detection.ssdlite320_mobilenet_v3_large state dict",
    "head.regression_head.module_list.0.1.weight",
    _ssdlite_slots,
    classifier_rows("head.classification_head.module_list.0.1.weight", per=SSD_ANCHORS_PER_LOCATION),
)
TORCHVISION_LRASPP = _dense_layout(
    "torchvision_lraspp",
    "torchvision.models.segmentation.lraspp_mobilenet_v3_large state dict",
    "classifier.cbr.0.weight",
    _lraspp_slots,
    classifier_rows("classifier.low_classifier.weight"),
)
TORCHVISION_DEEPLABV3 = _dense_layout(
    "torchvision_deeplabv3",
    "torchvision.models.segmentation.deeplabv3_mobilenet_v3_large state dict (aux_classifier.* ignored)",
    "classifier.0.convs.0.0.weight",
    _deeplabv3_slots,
    classifier_rows("classifier.4.weight"),
    ignored=("aux_classifier.",),
)
