"""Every weight layout by name, and the choice of one for a checkpoint: the one named
(`--weights-layout`), else the only one whose `detect` recognises the tensor names (also under a
prefix all of them share, as a wrapped model saves them: `module.`, `model.`, `backbone.`), else, for
names in PyTorch's form, `in_order`: the modules matched with the network's layers in order of
computation."""

from __future__ import annotations

from dataclasses import replace

from mnc.errors import InputError, choices_hint, param
from mnc.weights.layouts.dense import TORCHVISION_DEEPLABV3, TORCHVISION_LRASPP, TORCHVISION_SSDLITE
from mnc.weights.layouts.in_order import IN_ORDER, KERAS, TIMM, pytorch_names
from mnc.weights.layouts.layout import Layout, Slot
from mnc.weights.layouts.own import MNC
from mnc.weights.layouts.torchvision import TORCHVISION_MOBILENET_V2, TORCHVISION_MOBILENET_V3

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
        IN_ORDER,
    )
}
# What wrapping a model puts before every name (DataParallel, Lightning, a detector's backbone).
PREFIXES = ("module.", "model.", "backbone.")


def choose_layout(keys: set[str], name: str | None, loc) -> Layout:
    if name is not None:
        if name not in LAYOUTS:
            raise InputError(
                f"{param('weights_layout')}: unknown layout '{name}'"
                + choices_hint(name, LAYOUTS, "layouts", ", ".join)
            )
        return _under_prefix(LAYOUTS[name], _prefix(keys))
    prefix = ""
    matches = _detected(keys)
    while not matches and _prefix(keys, prefix) != prefix:
        prefix = _prefix(keys, prefix)
        matches = _detected({k[len(prefix) :] for k in keys})
    if len(matches) == 1:
        return _under_prefix(matches[0], prefix)
    if not matches:
        if pytorch_names(keys):
            return IN_ORDER
        sample = ", ".join(sorted(keys)[:3])
        raise InputError(
            f"cannot tell the layout of these weights (tensors such as {sample}): no layout knows these names, "
            "and they are not PyTorch's '<module>.weight' names, which mnc can match in order of computation; "
            f"choose one with {param('weights_layout')} ({', '.join(LAYOUTS)})",
            loc,
        )
    raise InputError(
        f"these weights fit several layouts ({', '.join(m.name for m in matches)}); "
        f"choose one with {param('weights_layout')}",
        loc,
    )


def _detected(keys: set[str]) -> list[Layout]:
    return [layout for layout in LAYOUTS.values() if layout.detect(keys)]


def _prefix(keys, after: str = "") -> str:
    """`after` and one more of PREFIXES, where every name starts with both; else `after`."""
    return next((after + p for p in PREFIXES if keys and all(k.startswith(after + p) for k in keys)), after)


def _under_prefix(layout: Layout, prefix: str) -> Layout:
    """The layout, for a checkpoint whose every name starts with `prefix`."""
    if not prefix:
        return layout
    n = len(prefix)

    def strip(tensors):
        return {k[n:]: v for k, v in tensors.items()} if hasattr(tensors, "items") else {k[n:] for k in tensors}

    return replace(
        layout,
        description=f"{layout.description}; every name under '{prefix}'",
        detect=lambda keys: layout.detect(strip(keys)),
        slots=lambda graph, tensors: [
            Slot(prefix + s.key, s.node, s.param) for s in layout.slots(graph, strip(tensors))
        ],
        classes=lambda tensors: layout.classes(strip(tensors)),
        ignored=lambda key: layout.ignored(key[n:]),
        conventions=lambda keys: layout.conventions(strip(keys)),
    )
