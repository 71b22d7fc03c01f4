"""The primitives a block body is written in (`conv`, `add`, `concat`, …): one `Primitive` record
each, in PRIMITIVES. A record says what the primitive takes (its arguments in positional order,
their defaults, which of them name tensors), any check of a layer that the arguments alone do not
make, and the function that emits its IR (primitive_ir.py). The block checks (blocks.py), the
runner (runner.py) and table.py's takes_several_inputs read these records and name no primitive.

Value types (a whole number, an activation, a flag) are checked by the emit functions, as each value
is used: of several wrong values, the first the primitive uses is the one reported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mnc.errors import Collector
from mnc.frontend import primitive_ir as ir
from mnc.frontend.ast import Expr, Layer
from mnc.frontend.expressions import DEFAULT_ACT

FROM = "from"  # every primitive's keyword argument: the tensor it reads instead of the current one


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # an Arg's default when the layer must give it


@dataclass(frozen=True)
class Arg:
    name: str
    default: object = REQUIRED
    tensor: bool = False  # names a tensor (an earlier layer, `input`, a tap parameter), not a value


@dataclass(frozen=True)
class Primitive:
    name: str
    summary: str
    emit: Callable  # (Emitter, layer name, {argument: value}, Layer) → None; see primitive_ir.py
    args: tuple[Arg, ...] = ()  # in positional order
    # Also takes any number of unnamed tensors, emitted as values["inputs"]; with none written,
    # the row's inputs (its `from` cell), so a block with such a layer joins several taps.
    joins: bool = False
    # A check of the whole layer beyond each argument's: (arguments given, layer, problems).
    check: Callable[[dict[str, Expr], Layer, Collector], None] | None = None

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args)

    @property
    def defaults(self) -> dict:
        return {a.name: a.default for a in self.args if a.default is not REQUIRED}

    def names_tensor(self, key: str) -> bool:
        """Whether argument `key` names a tensor rather than giving a value."""
        return key == FROM or any(a.name == key and a.tensor for a in self.args)

    def joins_row_inputs(self, layer: Layer) -> bool:
        """A layer of this primitive written without arguments joins its row's inputs."""
        return self.joins and not layer.args


def _to_or_scale(given: dict[str, Expr], layer: Layer, problems: Collector) -> None:
    if ("to" in given) == ("scale" in given):
        problems.error("upsample() takes either `to` (a tensor whose size to take) or `scale`, one of them", layer.loc)


PRIMITIVES = {
    p.name: p
    for p in [
        Primitive(
            "conv",
            "k×k convolution to c channels (dilated by `dilation`), then batch norm, then act; "
            "bias: a bias (default: when bn=no)",
            ir.emit_conv,
            (
                Arg("k"),
                Arg("c"),
                Arg("stride", 1),
                Arg("groups", 1),
                Arg("act", DEFAULT_ACT),
                Arg("bn", True),
                Arg("dilation", 1),
                Arg("bias", None),
            ),
        ),
        Primitive(
            "se",
            "squeeze-and-excite: pool, 1×1 conv to `squeeze` channels, act, 1×1 conv back, gate, multiply",
            ir.emit_se,
            (Arg("squeeze"), Arg("act", "relu"), Arg("gate", "hsigmoid")),
        ),
        Primitive(
            "add",
            "add a named earlier tensor (`input`: the block's input) to the current one",
            ir.emit_add,
            (Arg("skip", tensor=True),),
        ),
        Primitive(
            "mul",
            "multiply the current tensor by a named one (a per-channel gate broadcasts)",
            ir.emit_mul,
            (Arg("other", tensor=True),),
        ),
        Primitive(
            "concat",
            "join named tensors along channels (feature maps) or rows (per-anchor predictions); "
            "without arguments, the row's inputs (its `from` cell)",
            ir.emit_concat,
            joins=True,
        ),
        Primitive(
            "upsample",
            "bilinear resampling (half-pixel centres, PyTorch's align_corners=False) to the size of a named "
            "tensor (`to`) or by a factor (`scale`)",
            ir.emit_upsample,
            (Arg("to", None, tensor=True), Arg("scale", None)),
            check=_to_or_scale,
        ),
        Primitive(
            "per_anchor",
            "a detection head's A·K-channel map → one row of K values per anchor, rows ordered by position then anchor",
            ir.emit_per_anchor,
            (Arg("columns"),),
        ),
        Primitive("act", "an activation", ir.emit_act, (Arg("fn"),)),
        Primitive(
            "pool",
            "average pooling: global, or k×k windows at a stride (default k)",
            ir.emit_pool,
            (Arg("k", None), Arg("stride", None)),
        ),
        Primitive(
            "fc",
            "fully connected layer with bias (flattens its input)",
            ir.emit_fc,
            (Arg("c"), Arg("act", None)),
        ),
        Primitive("softmax", "softmax over the channels", ir.emit_softmax),
    ]
}
