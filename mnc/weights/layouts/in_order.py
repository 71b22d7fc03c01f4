"""Layouts that match weighted layers in the order of computation: Keras models, timm state dicts, and
any other PyTorch state dict (the fallback, `in_order`).

A Keras file (mnc/weights/keras.py names its tensors '<layer>/<variable>') and a PyTorch state dict
('<module>.<parameter>', in its modules' registration order) list their weighted layers in an order in
which the network computes them; the network's nodes with parameters are matched with them
(layouts/matching.py), each by its kind and the shape of every parameter: a kernel fills any weighted op
(a fully connected layer takes a dense kernel or a 1×1 convolution's: Keras's MobileNet classifier,
timm's conv_head), a batch norm (told by its statistics) a batch norm; parallel branches in either order.
Which parameters a node has, and in what order, is the op registry's (`Graph.param_shapes`); a framework
only says what it calls each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mnc.ir.graph import Graph
from mnc.weights.layouts.layout import (
    PYTORCH_NAMES,
    Layout,
    Slot,
    Tensors,
    classifier_rows,
    pytorch_ignored,
)
from mnc.weights.layouts.matching import Naming, group, match


@dataclass(frozen=True)
class InOrder:
    separator: str  # between layer and variable in a tensor's name
    variables: dict[str, tuple[str, ...]]  # IR param → the file's variable names that may hold it
    kinds: dict[str, str]  # a variable that tells the layer's kind → IR op (the first found decides)
    source: str  # what the file's layers are, in words ("the timm state dict's modules")
    order: Callable[[list[str]], list[str]] = list  # the keys in an order of computation
    only: dict[str, tuple[str, ...]] = field(default_factory=dict)  # a variable → the only IR ops it fills
    ignored: Callable[[str], bool] = lambda key: False
    unit: str = "module"  # what the framework calls one of its layers

    def slots(self, graph: Graph, tensors: Tensors) -> list[Slot]:
        keys = self.order(list(tensors))
        modules = group({k: tensors[k] for k in keys}, self.separator, self.kinds, self.ignored)
        naming = Naming(self.source, self._names, self.kinds, self.unit)
        note = ""
        if len(keys) > 1 and keys == sorted(keys):
            note = (
                "the file lists its tensors sorted by name (safetensors files do), which is seldom an order of "
                "computation: a .pth or .npz written from the model's state dict keeps its modules' order"
            )
        return match(graph, modules, naming, None, note)

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
    "the Keras model's layers",
    only={"depthwise_kernel": ("conv",)},  # a Dense layer's kernel is only ever `kernel`
    unit="layer",
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


# A state dict lists its modules in their registration order, which for timm's models is an order of
# computation; a safetensors file sorts the names, and then timm's module names give the order. An
# inverted residual computes conv_pw, conv_dw, its squeeze-excite, conv_pwl, with bn1…bn3 after each; a
# depthwise-separable block conv_dw, squeeze-excite, conv_pw, with bn1 and bn2; MobileNetV4's universal
# inverted residual dw_start, pw_exp, dw_mid, squeeze-excite, pw_proj; GhostNet's bottleneck ghost1,
# conv_dw, squeeze-excite, ghost2, then its shortcut.
_TIMM_TOP = {"conv_stem": 0, "bn1": 1, "blocks": 2, "conv_head": 3, "bn2": 4, "norm_head": 4, "classifier": 5}
_SE = ("se.conv_reduce", "se.conv_expand")
_TIMM_INVERTED = ("conv_pw", "bn1", "conv_dw", "bn2", *_SE, "conv_pwl", "bn3")
_TIMM_SEPARABLE = ("conv_dw", "bn1", *_SE, "conv_pw", "bn2")
_TIMM_UNIVERSAL = (
    *(f"{unit}.{m}" for unit in ("dw_start", "pw_exp", "dw_mid") for m in ("conv", "bn")),
    *_SE,
    "pw_proj.conv",
    "pw_proj.bn",
)
_GHOST = tuple(f"{g}.{u}.{i}" for g in ("ghost1",) for u in ("primary_conv", "cheap_operation") for i in (0, 1))
_TIMM_GHOST = (
    *_GHOST,
    "conv_dw",
    "bn_dw",
    *_SE,
    *(m.replace("ghost1", "ghost2") for m in _GHOST),
    *(f"shortcut.{i}" for i in range(4)),
)
_TIMM_CONV = ("conv", "bn1")
_NOT_V1_V2 = (".dw_start.", ".pw_exp.", ".ghost1.")
_MARKS = {"conv_pwl": _TIMM_INVERTED, "pw_exp": _TIMM_UNIVERSAL, "dw_start": _TIMM_UNIVERSAL, "ghost1": _TIMM_GHOST}


def _timm_order(keys: list[str]) -> list[str]:
    if keys != sorted(keys):
        return keys  # the order the modules were registered in
    units: dict[str, tuple[str, ...]] = {}  # blocks.S.B → its kind's module order
    for key in keys:
        parts = key.split(".")
        if parts[0] == "blocks" and len(parts) >= 5:
            block, module = ".".join(parts[:3]), parts[3]
            if module in _MARKS:
                units[block] = _MARKS[module]
            elif module == "conv_dw" and block not in units:
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
    "the timm state dict's modules",
    order=_timm_order,
    ignored=pytorch_ignored,
)


def _timm_conventions(keys: set[str]) -> dict:
    """timm's networks are PyTorch's: symmetric padding, ε 1e-5; its MobileNetV1 and V2 (blocks of
    conv_dw, conv_pw, conv_pwl only, no squeeze-excite) use ReLU6 throughout. V3 mixes activations, which
    its blocks say; MobileNetV4's and GhostNet's blocks (dw_start, ghost1 …) imply none."""
    conventions = {"padding": "symmetric", "batchnorm_eps": 1e-5}
    if not any(m in k for k in keys for m in (".se.", *_NOT_V1_V2)):
        conventions["activation"] = "relu6"
    return conventions


TIMM = Layout(
    "timm",
    "a timm state dict (conv_stem, blocks.S.B…, conv_head, classifier): MobileNetV1-V4, GhostNet, EfficientNet …",
    detect=lambda keys: "conv_stem.weight" in keys and any(k.startswith("blocks.0.0.") for k in keys),
    slots=TIMM_ORDER.slots,
    classes=classifier_rows("classifier.weight"),
    ignored=pytorch_ignored,
    conventions=_timm_conventions,
)


def pytorch_names(keys) -> bool:
    """Names in PyTorch's form: '<module>.<parameter>' with PyTorch's parameter names."""
    return any(k.endswith(".weight") for k in keys)


IN_ORDER_MATCH = InOrder(
    ".",
    {param: (name,) for param, name in PYTORCH_NAMES.items()},
    {"running_mean": "batchnorm", "weight": "conv"},
    "the checkpoint's modules",
    ignored=pytorch_ignored,
)
IN_ORDER = Layout(
    "in_order",
    "any PyTorch state dict (.pth, .npz; names as PyTorch's '<module>.weight'): its modules matched with "
    "the network's layers in order of computation, by their shapes (the fallback for names no other layout knows)",
    detect=lambda keys: False,  # never told by its names: choose_layout falls back to it
    slots=IN_ORDER_MATCH.slots,
    classes=lambda tensors: _last_module_rows(tensors),
    ignored=pytorch_ignored,
)


def _last_module_rows(tensors: dict) -> int | None:
    """The classes: the rows of the last module's weight where it is a Linear's (two dimensions)."""
    weights = [k for k in tensors if k.endswith(".weight")]
    return int(tensors[weights[-1]].shape[0]) if weights and tensors[weights[-1]].ndim == 2 else None
