"""Weight layouts: how the tensor names of a checkpoint map onto IR nodes and parameters.

A layout (layout.py: `Layout`, `Slot`) walks the IR's own structure, its blocks and their layers
in order, and says which tensor name feeds each parameter; mnc/weights/load.py then checks names
and shapes against the op registry. What the layouts know of the IR's node names is in
mnc/weights/node_names.py.

- own.py: `mnc`, the IR's node names (what `--save-weights` writes)
- torchvision.py: torchvision's MobileNetV2 and MobileNetV3
- dense.py: torchvision's SSDLite, LR-ASPP and DeepLabV3 on MobileNetV3-Large
- in_order.py: `InOrder`, weighted layers matched in order of computation: Keras models, timm state dicts,
  and `in_order`, any other PyTorch state dict (the fallback)
- matching.py: the match itself, by kinds, shapes and the network's dependencies (parallel branches)
- registry.py: `LAYOUTS` by name, `choose_layout` (also under a prefix such as `module.`; else `in_order`)
"""

from mnc.weights.layouts.dense import TORCHVISION_DEEPLABV3, TORCHVISION_LRASPP, TORCHVISION_SSDLITE
from mnc.weights.layouts.in_order import IN_ORDER, KERAS, KERAS_ORDER, TIMM, TIMM_ORDER, InOrder
from mnc.weights.layouts.layout import Layout, Slot
from mnc.weights.layouts.own import MNC
from mnc.weights.layouts.registry import LAYOUTS, choose_layout
from mnc.weights.layouts.torchvision import TORCHVISION_MOBILENET_V2, TORCHVISION_MOBILENET_V3

__all__ = [
    "IN_ORDER",
    "KERAS",
    "KERAS_ORDER",
    "LAYOUTS",
    "MNC",
    "TIMM",
    "TIMM_ORDER",
    "TORCHVISION_DEEPLABV3",
    "TORCHVISION_LRASPP",
    "TORCHVISION_MOBILENET_V2",
    "TORCHVISION_MOBILENET_V3",
    "TORCHVISION_SSDLITE",
    "InOrder",
    "Layout",
    "Slot",
    "choose_layout",
]
