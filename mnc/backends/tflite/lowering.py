"""IR → TFLite operators: the TFLite target's lowering table (mnc/backends/lowering.py).

NHWC throughout, as TFLite's kernels want it: convolution weights are OHWI (depthwise 1HWO), and
the file holds no TRANSPOSE. Explicit pads become TFLite's SAME where they are SAME's, VALID where
there are none, else a PAD then VALID (PyTorch's symmetric padding at stride 2 on even sizes),
judged on a dilated kernel's extent (k − 1)·d + 1. Per-anchor rows are a RESHAPE of the NHWC map
([N, H, W, A·K] → [N, H·W·A, K] is the IR's order already); concatenation is along channels
(axis 3) or rows (axis 1).
"""

from __future__ import annotations

import numpy as np

from mnc.backends.lowering import Lowering
from mnc.backends.target import INPUT_NAME
from mnc.backends.tflite.flatbuffer import Act, Op, Opt, T, Writer, make, nhwc, schema
from mnc.backends.tflite.options import FUSED_ACTIVATIONS
from mnc.ir.graph import Graph
from mnc.ir.node import Affine, Node
from mnc.ir.ops import depthwise_multiplier, dilation
from mnc.ir.ops.affine import per_channel
from mnc.ir.ops.graph_input import pixel_scale

FUSED = {fn: getattr(Act, fn.upper()) for fn in FUSED_ACTIVATIONS}  # RELU, RELU6


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one axis: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


# ---- activations ------------------------------------------------------------------------------
# TFLite has no hard sigmoid: the target asks for the hard_sigmoid rewrite (mnc/passes/hard_sigmoid.py),
# whose affine maps lower as TensorFlow's converter writes it (ADD with a fused RELU6, then MUL).


def _silu(w: Writer, x: int, out: int, name: str) -> int:
    """x·sigmoid(x): LOGISTIC, then MUL by its input, as TensorFlow's converter lowers swish."""
    int8 = w.tensors[x].type == T.INT8
    # In an int8 model LOGISTIC gives its fixed grid of [0, 1]: scale 1/256, int8 zero point −128.
    gate = w.activation(f"{name}.gate", w.tensors[x].shape, Affine(1.0 / 256.0, 0) if int8 else None)
    w.op(Op.LOGISTIC, [x], [gate])
    return w.op(Op.MUL, [x, gate], [out], Opt.MulOptions, make(schema.MulOptionsT))


ACTIVATIONS = {
    "relu": lambda w, x, out, name: w.op(Op.RELU, [x], [out]),
    "relu6": lambda w, x, out, name: w.op(Op.RELU6, [x], [out]),
    "sigmoid": lambda w, x, out, name: w.op(Op.LOGISTIC, [x], [out]),
    "silu": _silu,
    "gelu": lambda w, x, out, name: w.op(
        Op.GELU, [x], [out], Opt.GeluOptions, make(schema.GeluOptionsT, approximate=False)
    ),
    "hswish": lambda w, x, out, name: w.op(Op.HARD_SWISH, [x], [out]),
    "identity": lambda w, x, out, name: w.op(
        Op.RESHAPE,
        [x, w.int32(f"{name}.shape", [-1, *w.tensors[x].shape[1:]])],
        [out],
        Opt.ReshapeOptions,
        make(schema.ReshapeOptionsT),
    ),
}


def _with_activation(w: Writer, name: str, node: Node, emit) -> int:
    """Emit an op whose activation is fused where TFLite can fuse it, else a separate op after it."""
    fn = node.attrs.get("fused_act")
    out = w.output(name, node)
    if fn is None or fn in FUSED:
        emit(out, FUSED.get(fn, Act.NONE))
    else:  # an int8 graph has none of these: the target fuses only what TFLite can (FUSED)
        pre = w.tensor(f"{name}.preact", nhwc(node.shape))
        emit(pre, Act.NONE)
        LOWERING.activate(w, fn, pre, out, f"{name}.act", node)
    return out


# ---- ops ----------------------------------------------------------------------------------------


def _conv(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    a, p = node.attrs, node.params
    c_in, h, wd = w.graph.input_shapes(name)[0]
    (kh, kw), (sh, sw), (top, left, bottom, right) = a["kernel"], a["stride"], a["pads"]
    dh, dw = dilation(a)
    x = xs[0]
    # TFLite pads a dilated kernel for its extent (k − 1)·d + 1 (ComputePaddingHeightWidth).
    if (top, bottom) == same_pads(h, (kh - 1) * dh + 1, sh) and (left, right) == same_pads(wd, (kw - 1) * dw + 1, sw):
        padding = schema.Padding.SAME
    else:
        padding = schema.Padding.VALID
        if any(a["pads"]):
            padded = w.like(f"{name}.pad", [1, h + top + bottom, wd + left + right, c_in], x)
            paddings = w.int32(f"{name}.paddings", [[0, 0], [top, bottom], [left, right], [0, 0]])
            x = w.op(Op.PAD, [x, paddings], [padded], Opt.PadOptions, make(schema.PadOptionsT))
    out_channels = p["weight"].shape[0]
    b = w.bias(f"{name}.bias", node, out_channels, x)
    groups, multiplier = a["groups"], depthwise_multiplier(a, c_in)
    if groups == 1:
        filt = w.weights(f"{name}.weight", node, *weight_layout(w.graph, name))
        options = make(
            schema.Conv2DOptionsT, padding=padding, strideH=sh, strideW=sw, dilationHFactor=dh, dilationWFactor=dw
        )
        builtin, options_type = Op.CONV_2D, Opt.Conv2DOptions
    elif multiplier is not None:
        filt = w.weights(f"{name}.weight", node, *weight_layout(w.graph, name))
        options = make(
            schema.DepthwiseConv2DOptionsT,
            padding=padding,
            strideH=sh,
            strideW=sw,
            depthMultiplier=multiplier,
            dilationHFactor=dh,
            dilationWFactor=dw,
        )
        builtin, options_type = Op.DEPTHWISE_CONV_2D, Opt.DepthwiseConv2DOptions
    else:
        raise LOWERING.refuse(f"a grouped convolution ({groups} groups of {c_in} channels)", name, node)

    def emit(out: int, act: int) -> None:
        options.fusedActivationFunction = act
        w.op(builtin, [x, filt, b], [out], options_type, options)

    return _with_activation(w, name, node, emit)


def weight_layout(graph: Graph, name: str):
    """(IR weight → TFLite's layout, the axis of its output channels) for a conv or fc node."""
    node = graph.node(name)
    if node.op == "fc":
        (producer,) = graph.inputs_of(name)
        source = graph.input_shapes(producer)[0] if graph.node(producer).op == "flatten" else None
        if source is not None and len(source) == 3 and source[1] * source[2] > 1:
            # The flattened map was C×H×W in the IR and is H×W×C here: reorder the weight's columns.
            c, h, wd = source
            return (lambda a: a.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(a.shape[0], -1)), 0
        return (lambda a: a), 0
    if node.attrs["groups"] == 1:
        return (lambda a: a.transpose(0, 2, 3, 1)), 0  # OIHW → OHWI
    return (lambda a: a[:, 0].transpose(1, 2, 0)[None]), 3  # depthwise: O1HW → 1HWO


def _fc(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    out_features = node.params["weight"].shape[0]
    filt = w.weights(f"{name}.weight", node, *weight_layout(w.graph, name))
    b = w.bias(f"{name}.bias", node, out_features, xs[0])

    def emit(out: int, act: int) -> None:
        w.op(
            Op.FULLY_CONNECTED,
            [xs[0], filt, b],
            [out],
            Opt.FullyConnectedOptions,
            make(schema.FullyConnectedOptionsT, fusedActivationFunction=act),
        )

    return _with_activation(w, name, node, emit)


def _batchnorm(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    if w.int8:
        raise LOWERING.refuse("an unfolded batch norm in an int8 model (the default passes fold it)", name, node)
    p = {k: v.astype(np.float64) for k, v in node.params.items()}
    scale = p["gamma"] / np.sqrt(p["var"] + node.attrs["eps"])
    scaled = w.tensor(f"{name}.scaled", nhwc(node.shape))
    w.op(Op.MUL, [xs[0], w.constant(f"{name}.scale", scale)], [scaled], Opt.MulOptions, make(schema.MulOptionsT))
    out = w.tensor(name, nhwc(node.shape))
    return w.op(
        Op.ADD,
        [scaled, w.constant(f"{name}.shift", p["beta"] - p["mean"] * scale)],
        [out],
        Opt.AddOptions,
        make(schema.AddOptionsT),
    )


def _affine(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    """x·scale + shift: MUL, then ADD, either left out where it is the identity (a scale of one, a
    shift of zero), the activation fused into the last where TFLite can fuse it. Its constants:
    float32, one per channel (NHWC broadcasts them) or a scalar; on int8 values, a scalar int8
    constant (127 at value/127), what TFLite's int8 ADD and MUL take. Float values quantised into an
    int8 model (an image's pixels, normalised) are computed in float, then quantised."""
    p, x = node.params, xs[0]
    one_value, int8 = not per_channel(node.attrs), w.tensors[x].type == T.INT8
    steps = [
        (key, op)
        for key, op, identity in (("scale", Op.MUL, 1.0), ("shift", Op.ADD, 0.0))
        if np.any(p[key] != identity)
    ]
    steps = steps or [("shift", Op.ADD)]
    if int8 and not one_value:
        raise LOWERING.refuse("a per-channel affine map on int8 values", name, node)
    if int8 and len(steps) > 1:
        raise LOWERING.refuse("an affine map with both a scale and a shift on int8 values", name, node)
    fn = node.attrs.get("fused_act")
    quantise = w.int8 and not int8 and node.qparams is not None
    act = FUSED.get(fn, Act.NONE) if not quantise else Act.NONE
    for i, (key, op) in enumerate(steps):
        last = i == len(steps) - 1
        if int8:
            constant = w.scalar(f"{name}.{key}", float(p[key][0]), True)
        else:
            constant = w.constant(f"{name}.{key}", p[key][0] if one_value else p[key])
        if not last:
            out = w.tensor(f"{name}.scaled", nhwc(node.shape))
        elif quantise or (fn is not None and fn not in FUSED):
            out = w.tensor(f"{name}.float" if quantise else f"{name}.preact", nhwc(node.shape))
        else:
            out = w.output(name, node)
        options = (
            (Opt.MulOptions, make(schema.MulOptionsT)) if op == Op.MUL else (Opt.AddOptions, make(schema.AddOptionsT))
        )
        options[1].fusedActivationFunction = act if last else Act.NONE
        x = w.op(op, [x, constant], [out], *options)
    if quantise:
        if fn is not None:
            raise LOWERING.refuse("an activation after float values quantised into an int8 model", name, node)
        return w.op(Op.QUANTIZE, [x], [w.output(name, node)], Opt.QuantizeOptions, make(schema.QuantizeOptionsT))
    if fn is not None and fn not in FUSED:
        return LOWERING.activate(w, fn, x, w.output(name, node), f"{name}.act", node)
    return x


def _act(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    out = w.output(name, node)
    return LOWERING.activate(w, node.attrs["fn"], xs[0], out, name, node)


def _add(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    total = xs[0]
    for i, other in enumerate(xs[1:]):
        last = i == len(xs) - 2
        if not last and w.int8:
            raise LOWERING.refuse("a sum of more than two tensors in an int8 model", name, node)
        out = w.output(name, node) if last else w.tensor(f"{name}.{i}", nhwc(node.shape))
        total = w.op(Op.ADD, [total, other], [out], Opt.AddOptions, make(schema.AddOptionsT))
    return total


def _simple(builtin: int, options_type: int = Opt.NONE, options=None, extra=None):
    def lower(w: Writer, name: str, node: Node, xs: list[int]) -> int:
        inputs = xs + (extra(w, name, node) if extra else [])
        out = w.output(name, node)
        return w.op(builtin, inputs, [out], options_type, options() if options else None)

    return lower


def _avgpool(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    options = make(
        schema.Pool2DOptionsT,
        padding=schema.Padding.VALID,
        strideH=sh,
        strideW=sw,
        filterHeight=kh,
        filterWidth=kw,
        fusedActivationFunction=Act.NONE,
    )
    return w.op(Op.AVERAGE_POOL_2D, xs, [w.output(name, node)], Opt.Pool2DOptions, options)


def _resize(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    """Bilinear with half-pixel centres: TensorFlow's half_pixel_centers, PyTorch's align_corners=False."""
    size = w.int32(f"{name}.size", list(node.attrs["size"]))
    options = make(schema.ResizeBilinearOptionsT, alignCorners=False, halfPixelCenters=True)
    return w.op(Op.RESIZE_BILINEAR, [xs[0], size], [w.output(name, node)], Opt.ResizeBilinearOptions, options)


def _concat(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    """Along the IR's first per-sample axis: channels (axis 3 of NHWC maps) or rows (axis 1). TFLite's
    int8 kernel copies bytes and requires every input on the output's grid: an input on another grid
    is first requantised to it (QUANTIZE int8 → int8), which is what the reference computes, the
    joined values rounded to the output's grid."""
    out = w.output(name, node)
    if w.int8:
        grid = _grid(w.tensors[out])
        xs = [
            x
            if _grid(w.tensors[x]) == grid
            else w.op(
                Op.QUANTIZE,
                [x],
                [w.like(f"{name}.input{i}", w.tensors[x].shape, out)],
                Opt.QuantizeOptions,
                make(schema.QuantizeOptionsT),
            )
            for i, x in enumerate(xs)
        ]
    options = make(
        schema.ConcatenationOptionsT, axis=3 if len(node.shape) == 3 else 1, fusedActivationFunction=Act.NONE
    )
    return w.op(Op.CONCATENATION, xs, [out], Opt.ConcatenationOptions, options)


def _grid(t) -> tuple[float, int]:
    """An int8 tensor's (scale, zero point) as the runtime compares them (the scale a float32)."""
    return float(np.float32(t.quantization.scale[0])), int(t.quantization.zeroPoint[0])


def _per_anchor(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    """(A·K, H, W) → (H·W·A, K): on NHWC data, position-major and anchor-minor already, a RESHAPE."""
    rows, columns = node.shape
    shape = w.int32(f"{name}.shape", [-1, rows, columns])
    return w.op(Op.RESHAPE, [xs[0], shape], [w.output(name, node)], Opt.ReshapeOptions, make(schema.ReshapeOptionsT))


def _input(w: Writer, name: str, node: Node, xs: list[int]) -> int:
    """The model's input (tensor 0): floats, quantised (int8) as the first node expects them, or an
    image's 8-bit pixels (uint8) cast to float."""
    shape = nhwc(node.shape)
    scale = pixel_scale(node.attrs)
    if scale is None:
        x = w.tensor(INPUT_NAME, shape)
        if node.qparams is None:
            return x
        return w.op(
            Op.QUANTIZE, [x], [w.output(f"{INPUT_NAME}.int8", node)], Opt.QuantizeOptions, make(schema.QuantizeOptionsT)
        )
    if scale != 1:
        raise LOWERING.refuse(f"pixels scaled by {scale:g} on the way in (TFLite casts them as they are)", name, node)
    return w.op(
        Op.CAST,
        [w.tensor(INPUT_NAME, shape, T.UINT8)],
        [w.tensor(f"{INPUT_NAME}.float", shape)],
        Opt.CastOptions,
        make(schema.CastOptionsT, inDataType=T.UINT8, outDataType=T.FLOAT32),
    )


OPS = {
    "input": _input,
    "conv": _conv,
    "fc": _fc,
    "batchnorm": _batchnorm,
    "affine": _affine,
    "act": _act,
    "add": _add,
    "mul": _simple(Op.MUL, Opt.MulOptions, lambda: make(schema.MulOptionsT)),
    "global_avgpool": _simple(
        Op.MEAN,
        Opt.ReducerOptions,
        lambda: make(schema.ReducerOptionsT, keepDims=True),
        lambda w, n, node: [w.int32(f"{n}.axes", [1, 2])],
    ),
    "flatten": _simple(
        Op.RESHAPE,
        Opt.ReshapeOptions,
        lambda: make(schema.ReshapeOptionsT),
        lambda w, n, node: [w.int32(f"{n}.shape", [-1, int(np.prod(node.shape))])],
    ),
    "softmax": _simple(Op.SOFTMAX, Opt.SoftmaxOptions, lambda: make(schema.SoftmaxOptionsT, beta=1.0)),
    "avgpool": _avgpool,
    "resize": _resize,
    "concat": _concat,
    "per_anchor": _per_anchor,
}
LOWERING = Lowering("tflite", OPS, ACTIVATIONS)
