"""Every weight layout by name, and the choice of one for a checkpoint: the one named
(`--weights-layout`), else the only one whose `detect` recognises the tensor names."""

from __future__ import annotations

from mnc.errors import InputError, choices_hint, param
from mnc.weights.layouts.dense import TORCHVISION_DEEPLABV3, TORCHVISION_LRASPP, TORCHVISION_SSDLITE
from mnc.weights.layouts.in_order import KERAS, TIMM
from mnc.weights.layouts.layout import Layout
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
    )
}


def choose_layout(keys: set[str], name: str | None, loc) -> Layout:
    if name is not None:
        if name not in LAYOUTS:
            raise InputError(
                f"{param('weights_layout')}: unknown layout '{name}'"
                + choices_hint(name, LAYOUTS, "layouts", ", ".join)
            )
        return LAYOUTS[name]
    matches = [layout for layout in LAYOUTS.values() if layout.detect(keys)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        sample = ", ".join(sorted(keys)[:3])
        raise InputError(
            f"cannot tell the layout of these weights (tensors such as {sample}); "
            f"choose one with {param('weights_layout')} ({', '.join(LAYOUTS)})",
            loc,
        )
    raise InputError(
        f"these weights fit several layouts ({', '.join(m.name for m in matches)}); "
        f"choose one with {param('weights_layout')}",
        loc,
    )
