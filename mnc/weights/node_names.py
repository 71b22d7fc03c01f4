"""The IR node names the frontend gives, as the weight layouts read them: the one place that knows them.

frontend/emitter.py names every node `stage{row}.block{j}.{layer}`: `row` is the table row's index,
`j` which of the row's `n` repeats of its block, `layer` the layer's name in its
block (frontend/prelude.mnet: `conv`, `dw`, `pw`, `expand`, `se`, `project`, `pool`, `fc`, `softmax`…;
a spec's own blocks name theirs). A convolution's batch norm and activation are `{layer}.bn` and
`{layer}.act`; the squeeze-excite primitive (frontend/primitive_ir.py `emit_se`) names its two convolutions
`{layer}.fc1` and `{layer}.fc2`. mnc's own checkpoints name a parameter `{node}.{param}`.

Artifacts and checkpoints carry these names, so they must not change; a layout that needs one asks
here rather than spelling it out.
"""

from __future__ import annotations

import re

_BLOCK = re.compile(r"stage(\d+)\.block(\d+)")
_IN_A_BLOCK = re.compile(r"stage\d+\.block\d+\.")
_BATCHNORM = ".bn"  # frontend/emitter.py Emitter.conv
_ACTIVATION = ".act"

# The prelude's layer names that layouts look for.
CONV = "conv"  # conv2d
EXPAND = "expand"  # bottleneck, bneck: the 1×1 expansion
DEPTHWISE = "dw"  # dwsep, bottleneck, bneck
SQUEEZE_EXCITE = "se"  # bneck
PROJECT = "project"  # bottleneck, bneck: the linear 1×1 projection
FC = "fc"  # fc
SE_CONVS = ("fc1", "fc2")  # the squeeze-excite primitive's convolutions, in order
# The layers of a MobileNetV3 block (bneck) or of a conv2d row.
MOBILENET_V3_LAYERS = frozenset({CONV, EXPAND, DEPTHWISE, *(f"{SQUEEZE_EXCITE}.{c}" for c in SE_CONVS), PROJECT})


def block_of(node: str) -> str:
    """`stageS.blockJ`: the block (one repeat of one table row) that emitted a node."""
    return ".".join(node.split(".")[:2])


def in_block(node: str, block: str) -> bool:
    return node.startswith(block + ".")


def layer_of(node: str) -> str:
    """The layer's name within its block (`dw`, `se.fc1`, `project.bn`…)."""
    return node.split(".", 2)[2]


def row_order(block: str) -> tuple:
    """A block's place in the table: (row, repeat); a name not made by a row sorts first."""
    match = _BLOCK.fullmatch(block)
    return (int(match[1]), int(match[2])) if match else (-1, 0)


def is_block_node(name: str) -> bool:
    """Whether a name (or a checkpoint key made from one) starts with a block's `stageS.blockJ.`."""
    return _IN_A_BLOCK.match(name) is not None


def batchnorm_of(conv: str) -> str:
    return conv + _BATCHNORM


def is_batchnorm(layer: str) -> bool:
    return layer.endswith(_BATCHNORM)


def without_batchnorm(layer: str) -> str:
    return layer.removesuffix(_BATCHNORM)


def activation_of(conv: str) -> str:
    return conv + _ACTIVATION


def se_conv(node: str) -> str | None:
    """`fc1` or `fc2` for a convolution of a squeeze-excite layer named `se` (…blockJ.se.fc1), else None."""
    parts = node.rsplit(".", 2)
    return parts[2] if len(parts) == 3 and parts[1] == SQUEEZE_EXCITE and parts[2] in SE_CONVS else None


def checkpoint_key(node: str, param: str) -> str:
    """A parameter's name in mnc's own checkpoints (`--save-weights`, the `mnc` layout)."""
    return f"{node}.{param}"
