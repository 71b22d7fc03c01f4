"""What a block sees while it emits IR: the current tensor and its shape, and helpers that name
nodes `stage{row}.block{j}.{layer}`, attach the row's source position, width-scale channel counts
and pad convolutions as the spec says."""

from __future__ import annotations

import math
from math import prod

from mnc.errors import InputError
from mnc.frontend.ast import CLASSES_SYMBOL, LayerRow
from mnc.frontend.budget import Budget
from mnc.frontend.settings import Config
from mnc.ir.graph import Graph
from mnc.ir.shapes import infer_node


def pads_for(padding: str, size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one spatial axis."""
    if padding == "symmetric":
        return (kernel - 1) // 2, (kernel - 1) // 2
    out = math.ceil(size / stride)  # TF 'SAME': the extra pixel, if any, goes after
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Emitter:
    """What a block sees while it emits: the current tensor, its shape, and helpers that
    name nodes `stage{row}.block{j}.{layer}` and attach the row's source position."""

    def __init__(self, graph: Graph, config: Config, budget: Budget):
        self.graph, self.config, self.budget = graph, config, budget
        self.current: str = ""
        self.row: LayerRow | None = None
        self.prefix = ""

    def begin(self, row: LayerRow, repeat: int) -> None:
        self.row, self.prefix = row, f"stage{row.index}.block{repeat}"

    @property
    def shape(self) -> tuple:
        return self.graph.node(self.current).shape

    @property
    def channels(self) -> int:
        return self.shape[0]

    def scale(self, c, width: str | None) -> int:
        """A channel count after width scaling, as the row's modifier and the spec's rounding say."""
        if c == CLASSES_SYMBOL:
            return self.config.classes
        alpha = self.config.alpha
        if width == "fixed":
            return c
        if width == "no_shrink":
            alpha = max(1.0, alpha)
        return self.config.settings.width_rounding(c, alpha)

    def op(self, layer: str, op: str, inputs: list[str] | None = None, attrs: dict | None = None) -> str:
        if inputs is not None and len(set(inputs)) != len(inputs):
            raise InputError(
                f"layer '{layer}' reads the same tensor twice ({', '.join(inputs)}); a layer takes each tensor once",
                self.row.loc,
            )
        name = self.graph.add(f"{self.prefix}.{layer}", op, inputs or [self.current], attrs=attrs, src=self.row.loc)
        infer_node(self.graph, name)
        node = self.graph.node(name)
        self.budget.add(sum(prod(s) for s in self.graph.param_shapes(name).values()), node.shape, self.row.loc)
        self.current = name
        return name

    def conv(
        self,
        layer: str,
        out: int,
        kernel: int,
        stride: int,
        *,
        groups: int = 1,
        act: str | None = None,
        bn: bool = True,
        bias: bool | None = None,
        dilation: int = 1,
    ) -> str:
        if len(self.shape) != 3:
            raise InputError(
                f"a convolution needs a C×H×W feature map, but the rows above end in a flat vector of "
                f"{self.shape[0]} values (a fully connected layer or a flatten comes before it)",
                self.row.loc,
            )
        _, h, w = self.shape
        if h < stride or w < stride:
            raise InputError(
                f"the feature map collapses: a stride-{stride} layer receives a {h}×{w} map; "
                f"resolution {self.config.resolution} is too small for this network",
                self.row.cell_locs.get("s", self.row.loc),
            )
        span = (kernel - 1) * dilation + 1  # the extent a dilated kernel covers
        pad_h, pad_w = (
            pads_for(self.config.settings.padding, h, span, stride),
            pads_for(self.config.settings.padding, w, span, stride),
        )
        attrs = {
            "out_channels": out,
            "kernel": [kernel, kernel],
            "stride": [stride, stride],
            "pads": [pad_h[0], pad_w[0], pad_h[1], pad_w[1]],
            "groups": groups,
            "bias": not bn if bias is None else bias,
            "fused_act": None,
        }
        if dilation > 1:
            attrs["dilation"] = [dilation, dilation]
        self.op(layer, "conv", attrs=attrs)
        if bn:
            self.op(f"{layer}.bn", "batchnorm", attrs={"eps": self.config.settings.batchnorm_eps})
        if act is not None:
            self.op(f"{layer}.act", "act", attrs={"fn": act})
        return self.current

    def fc(self, layer: str, out: int) -> str:
        return self.op(layer, "fc", attrs={"out_features": out, "bias": True, "fused_act": None})
