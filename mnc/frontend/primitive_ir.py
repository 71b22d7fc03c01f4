"""The IR each block primitive emits: one function per primitive, `emit(e, name, values, layer)`,
with the primitive's arguments evaluated in `values` (tensors as IR node names). The checks of
values that depend on the row (a whole number, an odd kernel, divisible groups) are made here,
as the values become known, and raise EvalError at the layer."""

from __future__ import annotations

from mnc.frontend.ast import Layer
from mnc.frontend.emitter import Emitter
from mnc.frontend.expressions import DEFAULT_ACT, ActWord, EvalError
from mnc.ir import activations


def whole(value, what: str, layer: Layer, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < minimum:
        raise EvalError(f"{what} must be a whole number ≥ {minimum}, got {value!r}", layer.loc)
    return int(value)


def act(value, e: Emitter, layer: Layer) -> str | None:
    if isinstance(value, ActWord):
        value = value.fn
    if value == DEFAULT_ACT:
        return e.config.settings.activation
    if value is None or value in activations.ACTIVATIONS:
        return None if value == activations.IDENTITY else value
    raise EvalError(f"expected an activation, got {value!r}", layer.loc)


def flag(value, layer: Layer) -> bool:
    if isinstance(value, bool):
        return value
    raise EvalError(f"expected yes or no, got {value!r}", layer.loc)


def emit_conv(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    k = whole(v["k"], "kernel size k", layer)
    if k % 2 == 0:
        raise EvalError(f"kernel size must be odd, got {k}", layer.loc)
    out = whole(v["c"], "channels c", layer)
    groups = whole(v["groups"], "groups", layer)
    if e.channels % groups or out % groups:
        raise EvalError(f"{e.channels} input and {out} output channels cannot be split into {groups} groups", layer.loc)
    bn = flag(v["bn"], layer)
    e.conv(
        name,
        out,
        k,
        whole(v["stride"], "stride", layer),
        groups=groups,
        act=act(v["act"], e, layer),
        bn=bn,
        bias=not bn if v["bias"] is None else flag(v["bias"], layer),
        dilation=whole(v["dilation"], "dilation", layer),
    )


def emit_se(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    squeeze = whole(v["squeeze"], "squeeze channels", layer)
    x, channels = e.current, e.channels
    e.op(f"{name}.pool", "global_avgpool")
    e.conv(f"{name}.fc1", squeeze, 1, 1, act=act(v["act"], e, layer), bn=False)
    e.conv(f"{name}.fc2", channels, 1, 1, act=act(v["gate"], e, layer), bn=False)
    e.op(name, "mul", [x, e.current])


def emit_add(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    e.op(name, "add", [v["skip"], e.current])


def emit_mul(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    a, b = e.current, v["other"]
    # The IR's mul is (tensor, per-channel gate): the full-size operand first.
    inputs = [b, a] if e.graph.node(a).shape[1:] == (1, 1) and len(e.graph.node(b).shape) == 3 else [a, b]
    e.op(name, "mul", inputs)


def emit_concat(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    e.op(name, "concat", v["inputs"])


def emit_upsample(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    shape = e.shape
    if len(shape) != 3:
        raise EvalError(f"upsample() needs a C×H×W feature map, got a {'×'.join(map(str, shape))} tensor", layer.loc)
    if v["to"] is not None:
        target = e.graph.node(v["to"]).shape
        if len(target) != 3:
            raise EvalError(f"upsample(to=…) names a tensor without height and width ({target})", layer.loc)
        size = list(target[1:])
    else:
        scale = v["scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise EvalError(f"upsample(scale=…) must be a number > 0, got {scale!r}", layer.loc)
        size = [int(shape[1] * scale), int(shape[2] * scale)]  # floor, as PyTorch's interpolate
        if min(size) < 1:
            raise EvalError(f"upsample(scale={scale:g}) of a {shape[1]}×{shape[2]} map leaves nothing", layer.loc)
    e.op(name, "resize", attrs={"size": size})


def emit_per_anchor(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    e.op(name, "per_anchor", attrs={"columns": whole(v["columns"], "columns", layer)})


def emit_act(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    fn = act(v["fn"], e, layer)
    e.op(name, "act", attrs={"fn": fn or activations.IDENTITY})


def emit_pool(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    if v["k"] is None:
        if v["stride"] is not None:
            raise EvalError("pool(): a stride needs a window size k; without k the pooling is global", layer.loc)
        e.op(name, "global_avgpool")
        return
    k = whole(v["k"], "pooling window k", layer)
    stride = k if v["stride"] is None else whole(v["stride"], "stride", layer)
    e.op(name, "avgpool", attrs={"kernel": [k, k], "stride": [stride, stride]})


def emit_fc(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    out = whole(v["c"], "channels c", layer)
    if len(e.shape) != 1:
        e.op("flatten" if name == "fc" else f"{name}.flatten", "flatten")
    e.fc(name, out)
    fn = act(v["act"], e, layer)
    if fn is not None:
        e.op(f"{name}.act", "act", attrs={"fn": fn})


def emit_softmax(e: Emitter, name: str, v: dict, layer: Layer) -> None:
    e.op(name, "softmax")
