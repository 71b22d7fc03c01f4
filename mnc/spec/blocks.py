"""The block catalog: what each operator word of a table row builds.

Each block names the table columns it reads, their defaults, whether it takes a
kernel size and which modifiers it accepts, and emits IR through the Emitter
(mnc.spec.lower). Blocks compose IR ops; what an op computes is defined only in
mnc.ir.ops.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from mnc.spec.lower import Emitter
    from mnc.spec.table import LayerRow

REQUIRED = object()

# Modifiers that change how a row's `c` is width-scaled (see Emitter.width).
WIDTH_MODIFIERS = {
    "no_shrink": "keep c for α < 1 and scale it for α > 1 (MobileNetV2's last 1×1 conv)",
    "fixed": "never width-scale c",
}


@dataclass(frozen=True)
class BlockDef:
    name: str
    summary: str
    emit: Callable[["Emitter", "LayerRow", int], None]
    columns: dict[str, object] = field(default_factory=dict)  # column → default, or REQUIRED
    kernel: object = None  # None: takes no kernel; REQUIRED; or the default size
    modifiers: dict[str, str] = field(default_factory=dict)


def _conv2d(e: "Emitter", row: "LayerRow", stride: int) -> None:
    e.conv("conv", e.width(row), row.kernel, stride)


def _dwsep(e: "Emitter", row: "LayerRow", stride: int) -> None:
    e.conv("dw", e.channels, row.kernel, stride, groups=e.channels)
    e.conv("pw", e.width(row), 1, 1)


def _bottleneck(e: "Emitter", row: "LayerRow", stride: int) -> None:
    block_input, cin = e.current, e.channels
    cout = e.width(row)
    hidden = int(round(cin * row.values["t"]))
    if hidden != cin:
        e.conv("expand", hidden, 1, 1)
    e.conv("dw", hidden, row.kernel, stride, groups=hidden)
    e.conv("project", cout, 1, 1, act=None)  # linear bottleneck
    if stride == 1 and cin == cout:  # residuals are derived, never written
        e.op("add", "add", [block_input, e.current])


def _avgpool(e: "Emitter", row: "LayerRow", stride: int) -> None:
    e.op("pool", "global_avgpool")


def _fc(e: "Emitter", row: "LayerRow", stride: int) -> None:
    if len(e.shape) != 1:
        e.op("flatten", "flatten")
    e.fc("fc", e.width(row))


def _softmax(e: "Emitter", row: "LayerRow", stride: int) -> None:
    e.op("softmax", "softmax")


BLOCKS: dict[str, BlockDef] = {b.name: b for b in [
    BlockDef("conv2d", "convolution + batch norm + activation", _conv2d,
             columns={"c": REQUIRED, "s": 1}, kernel=REQUIRED, modifiers=WIDTH_MODIFIERS),
    BlockDef("dwsep", "depthwise separable: k×k depthwise and 1×1 pointwise convolutions, each with batch norm "
             "and activation (MobileNetV1)", _dwsep,
             columns={"c": REQUIRED, "s": 1}, kernel=3, modifiers=WIDTH_MODIFIERS),
    BlockDef("bottleneck", "inverted residual: 1×1 expansion by t, k×k depthwise, linear 1×1 projection; "
             "a residual joins input and output when the stride is 1 and the widths agree (MobileNetV2)",
             _bottleneck, columns={"t": REQUIRED, "c": REQUIRED, "s": 1}, kernel=3, modifiers=WIDTH_MODIFIERS),
    BlockDef("avgpool", "global average pooling", _avgpool, modifiers={"global": "pool over the whole feature map"}),
    BlockDef("fc", "fully connected layer with bias (flattens its input)", _fc, columns={"c": REQUIRED},
             modifiers=WIDTH_MODIFIERS),
    BlockDef("softmax", "softmax over the classes", _softmax),
]}
