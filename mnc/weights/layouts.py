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
    # Settings the framework's layers compute with, which a build applies to the spec (from the names).
    conventions: Callable[[set[str]], dict] = lambda keys: {}


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
    # In the order of the table's rows: a branch reading an early tap may come early in graph order.
    return OrderedDict(sorted(grouped.items(), key=lambda kv: _row_order(kv[0])))


def _row_order(block: str) -> tuple:
    match = re.fullmatch(r"stage(\d+)\.block(\d+)", block)
    return (int(match[1]), int(match[2])) if match else (-1, 0)


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

# ---- torchvision detection and segmentation on MobileNetV3-Large ---------------------------------
# The backbone's blocks are named as in torchvision's MobileNetV3 (features.N…), under a prefix
# that depends on the model; the heads' layers are named in the spec by their block's layer names
# (examples/specs/{ssdlite320,lraspp,deeplabv3}_mobilenet_v3_large.mnet), mapped here onto
# torchvision's modules.

BACKBONE_LAYERS = {"conv", "expand", "dw", "se.fc1", "se.fc2", "project"}


def _split_backbone(graph: Graph) -> tuple[Graph, list[list[str]]]:
    """The leading blocks that are MobileNetV3 blocks (a graph view of only their nodes is not needed:
    their slots are made by the V3 layout), and the remaining blocks' parameter nodes."""
    blocks = list(_blocks(graph).values())
    n = 0
    while n < len(blocks) and all(_layer(node).removesuffix(".bn") in BACKBONE_LAYERS for node in blocks[n]):
        n += 1
    return blocks[:n], blocks[n:]


def _backbone_slots(graph: Graph, blocks: list[list[str]], rename: Callable[[str], str]) -> list[Slot]:
    backbone = set(node for nodes in blocks for node in nodes)
    slots = _tv_v3_slots(_Restricted(graph, backbone), [])
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


def _layer(node: str) -> str:
    return node.split(".", 2)[2]


def _named_slots(graph: Graph, nodes: list[str], names: dict[str, tuple[str, str | None]]) -> list[Slot]:
    """Slots of a head block whose layers have the given torchvision module names: layer → (conv
    module, its batch norm's module or None)."""
    slots: list[Slot] = []
    for node in nodes:
        layer = _layer(node)
        if layer.endswith(".bn") or graph.node(node).op != "conv":
            continue
        if layer not in names:
            raise InputError(
                f"the torchvision layout has no module for layer '{layer}' of this head ({', '.join(names)})",
                graph.node(node).src,
            )
        conv, bn = names[layer]
        slots += [Slot(f"{conv}.{p}", node, p) for p in _param_names(graph, node)]
        if bn is not None and f"{node}.bn" in graph:
            slots += [Slot(f"{bn}.{BN_NAMES[p]}", f"{node}.bn", p) for p in _param_names(graph, f"{node}.bn")]
    return slots


def _tv_lraspp_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    backbone, heads = _split_backbone(graph)
    slots = _backbone_slots(graph, backbone, lambda key: key.replace("features.", "backbone.", 1))
    names = {
        "cbr": ("classifier.cbr.0", "classifier.cbr.1"),
        "scale": ("classifier.scale.1", None),
        "high_classifier": ("classifier.high_classifier", None),
        "low_classifier": ("classifier.low_classifier", None),
    }
    for nodes in heads:
        slots += _named_slots(graph, nodes, names)
    return slots


def _tv_deeplabv3_slots(graph: Graph, keys: list[str]) -> list[Slot]:
    backbone, heads = _split_backbone(graph)
    slots = _backbone_slots(graph, backbone, lambda key: key.replace("features.", "backbone.", 1))
    aspp = {f"b{i}": (f"classifier.0.convs.{i}.0", f"classifier.0.convs.{i}.1") for i in range(4)}
    aspp["pooled"] = ("classifier.0.convs.4.1", "classifier.0.convs.4.2")
    aspp["project"] = ("classifier.0.project.0", "classifier.0.project.1")
    after = iter([{"conv": ("classifier.1", "classifier.2")}, {"conv": ("classifier.4", None)}])
    for nodes in heads:
        if any(_layer(n) == "b0" for n in nodes):
            slots += _named_slots(graph, nodes, aspp)
        else:
            slots += _named_slots(graph, nodes, next(after, {}))
    return slots


def _tv_ssdlite_slots(graph: Graph, keys: list[str]) -> list[Slot]:
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
        layers = {_layer(n) for n in nodes}
        if "predict" in layers:
            head, level = _predictor(graph, nodes)
            prefix = f"head.{head}.module_list.{level}"
            slots += _named_slots(
                graph, nodes, {"dw": (f"{prefix}.0.0", f"{prefix}.0.1"), "predict": (f"{prefix}.1", None)}
            )
        else:
            names = {"reduce": 0, "dw": 1, "expand": 2}
            prefix = f"backbone.extra.{extra}"
            slots += _named_slots(graph, nodes, {k: (f"{prefix}.{i}.0", f"{prefix}.{i}.1") for k, i in names.items()})
            extra += 1
    return slots


def _c4_block(graph: Graph, backbone: list[list[str]]) -> int:
    """The backbone block whose expansion layer feeds a detection predictor (the C4 tap)."""
    for i, nodes in enumerate(backbone):
        for node in nodes:
            if _layer(node) == "expand" and f"{node}.bn" in graph:
                tapped = f"{node}.act" if f"{node}.act" in graph else f"{node}.bn"
                if any(user.split(".")[:2] != node.split(".")[:2] for user in graph.users(tapped)):
                    return i
    raise InputError(
        "the torchvision SSDLite layout needs the C4 tap: a backbone block's expansion layer read by a head"
    )


def _predictor(graph: Graph, nodes: list[str]) -> tuple[str, int]:
    """(regression_head or classification_head, level) of a predictor block: which output its rows
    reach, and at which position of that output's concatenation."""
    block = ".".join(nodes[0].split(".")[:2])
    rows = next((n for n in graph.topo() if n.startswith(block + ".") and graph.node(n).op == "per_anchor"), None)
    concat = next((u for u in graph.users(rows) if graph.node(u).op == "concat"), None) if rows else None
    label = graph.output_labels.get(concat, "") if concat else ""
    heads = {"bbox_regression": "regression_head", "cls_logits": "classification_head"}
    if label not in heads:
        raise InputError(
            "the torchvision SSDLite layout maps predictors whose rows are joined into the outputs "
            "bbox_regression and cls_logits",
            graph.node(nodes[0]).src,
        )
    return heads[label], graph.inputs_of(concat).index(rows)


def _dense_layout(name: str, description: str, marker: str, classes, ignored=()) -> Layout:
    return Layout(
        name,
        description,
        detect=lambda keys: marker in keys,
        slots={"torchvision_ssdlite": _tv_ssdlite_slots, "torchvision_lraspp": _tv_lraspp_slots}.get(
            name, _tv_deeplabv3_slots
        ),
        classes=classes,
        ignored=lambda key: key.endswith(".num_batches_tracked") or key.startswith(ignored),
    )


SSD_ANCHORS_PER_LOCATION = 6  # torchvision's DefaultBoxGenerator with aspect ratios (2, 3) on every level
TORCHVISION_SSDLITE = _dense_layout(
    "torchvision_ssdlite",
    "torchvision.models.detection.ssdlite320_mobilenet_v3_large state dict",
    "head.regression_head.module_list.0.1.weight",
    lambda t: (
        int(t["head.classification_head.module_list.0.1.weight"].shape[0]) // SSD_ANCHORS_PER_LOCATION
        if "head.classification_head.module_list.0.1.weight" in t
        else None
    ),
)
TORCHVISION_LRASPP = _dense_layout(
    "torchvision_lraspp",
    "torchvision.models.segmentation.lraspp_mobilenet_v3_large state dict",
    "classifier.cbr.0.weight",
    lambda t: int(t["classifier.low_classifier.weight"].shape[0]) if "classifier.low_classifier.weight" in t else None,
)
TORCHVISION_DEEPLABV3 = _dense_layout(
    "torchvision_deeplabv3",
    "torchvision.models.segmentation.deeplabv3_mobilenet_v3_large state dict (aux_classifier.* ignored)",
    "classifier.0.convs.0.0.weight",
    lambda t: int(t["classifier.4.weight"].shape[0]) if "classifier.4.weight" in t else None,
    ignored=("aux_classifier.",),
)

# ---- in order: Keras models and timm state dicts ----------------------------------------------
# A Keras file (mnc/weights/keras.py names its tensors '<layer>/<variable>') and a timm state dict
# ('<module>.<parameter>') both list their weighted layers in the order of computation; the
# network's weighted layers are matched with them one by one, each with its kind: a convolution
# takes a convolution kernel, a batch norm a batch norm, a fully connected layer a dense kernel or
# a 1×1 convolution (Keras's MobileNet classifier, timm's conv_head). Names and shapes are then
# checked as for every layout.


@dataclass(frozen=True)
class InOrder:
    separator: str  # between layer and variable in a tensor's name
    variables: dict[str, dict[str, tuple[str, ...]]]  # IR op → IR param → the file's variable names
    kinds: dict[str, str]  # a variable that tells the layer's kind → IR op (the first found decides)
    framework: str
    order: Callable[[list[str]], list[str]] = list  # the keys in the order of computation

    def layers(self, keys: list[str]) -> "OrderedDict[str, dict[str, str]]":
        grouped: OrderedDict[str, dict[str, str]] = OrderedDict()
        for key in self.order(keys):
            layer, _, variable = key.rpartition(self.separator)
            grouped.setdefault(layer, {})[variable] = key
        return OrderedDict((k, v) for k, v in grouped.items() if any(name in self.kinds for name in v))

    def slots(self, graph: Graph, keys: list[str]) -> list[Slot]:
        slots: list[Slot] = []
        layers = iter(self.layers(keys).items())
        for node in _param_nodes(graph):
            op = graph.node(node).op
            layer, variables = next(layers, (f"(no {self.framework} layer left)", {}))  # reported as missing
            if not variables:
                slots += [Slot(f"{layer}{self.separator}{p}", node, p) for p in _param_names(graph, node)]
                continue
            kind = next(op for v, op in self.kinds.items() if v in variables)
            if kind != op and not (op == "fc" and kind == "conv"):
                raise InputError(
                    f"the {self.framework} model's layer '{layer}' ({', '.join(variables)}) is where this network "
                    f"has layer '{node}' ({op}): the spec does not describe this model",
                    graph.node(node).src,
                )
            for param in _param_names(graph, node):
                found = next((variables[v] for v in self.variables[op][param] if v in variables), None)
                slots.append(Slot(found or f"{layer}{self.separator}{param}", node, param))
        return slots


KERAS_ORDER = InOrder(
    "/",
    {
        "conv": {"weight": ("kernel", "depthwise_kernel"), "bias": ("bias",)},
        "batchnorm": {"gamma": ("gamma",), "beta": ("beta",), "mean": ("moving_mean",), "var": ("moving_variance",)},
        "fc": {"weight": ("kernel",), "bias": ("bias",)},
    },
    {"kernel": "conv", "depthwise_kernel": "conv", "moving_mean": "batchnorm"},
    "Keras",
)
KERAS = Layout(
    "keras",
    "a Keras model (.keras or .h5): its layers in order, Conv2D/DepthwiseConv2D, BatchNormalization, Dense",
    detect=lambda keys: any(k.endswith("/moving_mean") for k in keys),
    slots=KERAS_ORDER.slots,
    classes=lambda tensors: _last_kernel_rows(tensors, "/kernel"),
)

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
    {
        "conv": {"weight": ("weight",), "bias": ("bias",)},
        "batchnorm": {"gamma": ("weight",), "beta": ("bias",), "mean": ("running_mean",), "var": ("running_var",)},
        "fc": {"weight": ("weight",), "bias": ("bias",)},
    },
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
    classes=lambda tensors: int(tensors["classifier.weight"].shape[0]) if "classifier.weight" in tensors else None,
    ignored=lambda key: key.endswith(".num_batches_tracked"),
    conventions=_timm_conventions,
)


def _last_kernel_rows(tensors: dict, suffix: str) -> int | None:
    kernels = [k for k in tensors if k.endswith(suffix)]
    return int(tensors[kernels[-1]].shape[0]) if kernels else None


LAYOUTS = {
    layout.name: layout
    for layout in (
        MNC,
        TORCHVISION_MOBILENET_V2,
        TORCHVISION_MOBILENET_V3,
        TORCHVISION_SSDLITE,
        TORCHVISION_LRASPP,
        TORCHVISION_DEEPLABV3,
        KERAS,
        TIMM,
    )
}


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
