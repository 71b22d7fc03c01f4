"""The IR: kernels against naive definitions, padding rules, shape inference, validate()."""

import numpy as np
import pytest

from mnc.errors import InputError, Loc
from mnc.frontend.emitter import pads_for
from mnc.ir import kernels
from mnc.ir.graph import Graph, GraphError
from mnc.ir.interpreter import run
from mnc.ir.roundoff import float16_rounded
from mnc.ir.shapes import infer_shapes

SRC = Loc("test.mnet", 1, 1)


def naive_conv(x, w, b, stride, pads, groups):
    """Convolution straight from its definition, one output element at a time."""
    top, left, bottom, right = pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    og = o // groups
    out = np.zeros((n, o, ho, wo))
    for b_ in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(ho):
                for j in range(wo):
                    patch = x[b_, g * cg : (g + 1) * cg, i * stride : i * stride + kh, j * stride : j * stride + kw]
                    out[b_, oc, i, j] = np.sum(patch * w[oc]) + (b[oc] if b is not None else 0)
    return out


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", ["1", "2", "dw"])
@pytest.mark.parametrize("bias", [False, True])
def test_conv_kernel_matches_definition(k, stride, groups, bias):
    rng = np.random.default_rng(k * 100 + stride * 10 + len(groups))
    c = 4
    g = c if groups == "dw" else int(groups)
    o = c if groups == "dw" else 6
    x = rng.standard_normal((2, c, 9, 8))
    w = rng.standard_normal((o, c // g, k, k))
    b = rng.standard_normal(o) if bias else None
    pads = (k // 2, k // 2 - 1 if k > 1 else 0, k // 2 + 1, k // 2)  # asymmetric on purpose
    np.testing.assert_allclose(
        kernels.conv2d(x, w, b, (stride, stride), pads, g), naive_conv(x, w, b, stride, pads, g), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(
    "size,k,s,expected",
    [
        (224, 3, 2, (0, 1)),  # TF 'SAME' with an even input and stride 2 pads only after
        (113, 3, 2, (1, 1)),
        (7, 3, 1, (1, 1)),
        (7, 1, 1, (0, 0)),
        (8, 5, 2, (1, 2)),
        (1, 3, 2, (1, 1)),
    ],
)
def test_same_padding_follows_tensorflow(size, k, s, expected):
    before, after = pads_for("same", size, k, s)
    assert (before, after) == expected
    assert (size + before + after - k) // s + 1 == -(-size // s)  # output is ceil(size / stride)


def test_symmetric_padding():
    assert pads_for("symmetric", 224, 3, 2) == (1, 1)
    assert pads_for("symmetric", 224, 5, 1) == (2, 2)


def _conv_attrs(out, k=3, stride=1, groups=1, pads=(1, 1, 1, 1)):
    return {
        "out_channels": out,
        "kernel": [k, k],
        "stride": [stride, stride],
        "pads": list(pads),
        "groups": groups,
        "bias": False,
        "fused_act": None,
    }


def _tiny_graph() -> Graph:
    g = Graph("t")
    g.add("input", "input", attrs={"shape": [3, 8, 8]}, src=SRC)
    g.add("conv", "conv", ["input"], attrs=_conv_attrs(4, stride=2), src=SRC)
    g.add("act", "act", ["conv"], attrs={"fn": "relu6"}, src=SRC)
    g.add("pool", "global_avgpool", ["act"], src=SRC)
    g.add("flat", "flatten", ["pool"], src=SRC)
    g.outputs = ["flat"]
    return infer_shapes(g)


def test_shapes_and_interpreter_on_a_hand_built_graph():
    g = _tiny_graph()
    assert [g.node(n).shape for n in g.topo()] == [(3, 8, 8), (4, 4, 4), (4, 4, 4), (4, 1, 1), (4,)]
    g.validate()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g.node("conv").params = {"weight": w}
    g.validate(require_params=True)
    x = rng.standard_normal((2, 3, 8, 8))
    (out,) = run(g, {"input": x}).values()
    expected = np.clip(naive_conv(x, w.astype(np.float64), None, 2, (1, 1, 1, 1), 1), 0, 6).mean(axis=(2, 3))
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_validate_rejects_malformed_graphs():
    g = _tiny_graph()
    g.node("act").op = "gelu_fancy"
    with pytest.raises(GraphError, match="unknown op 'gelu_fancy'.*node 'act'"):
        g.validate()

    g = _tiny_graph()
    g.connect("input", "act", port=1)
    with pytest.raises(GraphError, match="op 'act' takes 1 inputs, node has 2"):
        g.validate()

    g = _tiny_graph()
    g.disconnect("act", "pool")
    g.connect("act", "pool", port=3)
    with pytest.raises(GraphError, match=r"input ports \[3\] are not 0..0"):
        g.validate()

    g = _tiny_graph()
    g.connect("flat", "conv", port=1)
    with pytest.raises(GraphError, match="cycle"):
        g.validate()

    g = _tiny_graph()
    g.outputs = ["nowhere"]
    with pytest.raises(GraphError, match="graph output 'nowhere' is not a node"):
        g.validate()

    g = _tiny_graph()
    g.node("pool").src = None
    with pytest.raises(GraphError, match="no source position"):
        g.validate()

    g = _tiny_graph()
    g.node("conv").params = {"weight": np.zeros((4, 3, 5, 5), np.float32)}
    with pytest.raises(GraphError, match=r"param 'weight' has shape \(4, 3, 5, 5\), expected \(4, 3, 3, 3\)"):
        g.validate()

    g = _tiny_graph()
    with pytest.raises(GraphError, match=r"params \[\] but op 'conv' needs \['weight'\]"):
        g.validate(require_params=True)


def test_graph_refuses_duplicate_names_and_unknown_inputs():
    g = _tiny_graph()
    with pytest.raises(GraphError, match="duplicate node name"):
        g.add("conv", "act", ["input"], attrs={"fn": "relu"}, src=SRC)
    with pytest.raises(GraphError, match="input 'ghost' does not exist"):
        g.add("x", "act", ["ghost"], attrs={"fn": "relu"}, src=SRC)


def test_shape_errors_point_at_the_source():
    g = Graph("t")
    g.add("input", "input", attrs={"shape": [3, 2, 2]}, src=SRC)
    g.add("conv", "conv", ["input"], attrs=_conv_attrs(4, k=5, pads=(0, 0, 0, 0)), src=Loc("net.mnet", 7, 3))
    g.outputs = ["conv"]
    with pytest.raises(InputError) as info:
        infer_shapes(g)
    (d,) = info.value.diagnostics
    assert d.loc.line == 7 and "a 5x5 kernel with stride 1 on a 2×2 input" in d.message


def test_copy_is_independent():
    g = _tiny_graph()
    h = g.copy()
    h.node("conv").attrs["stride"][0] = 1
    h.remove(["flat"])
    assert g.node("conv").attrs["stride"] == [2, 2] and "flat" in g


def test_float16_rounding_is_numpys_conversion_bit_for_bit():
    # Every float32 whose upper 16 bits take any value, with the lower bits at each edge of float16's
    # rounding (ties, just below and above them, the carry into the exponent), and random patterns:
    # subnormals, overflow to inf, infinities and NaNs included.
    high = np.arange(2**16, dtype=np.uint32) << np.uint32(16)
    low = np.array([0, 1, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x2001, 0x7FFF, 0x8000, 0xEFFF, 0xF000, 0xFFFF])
    patterns = (high[:, None] | low.astype(np.uint32)[None, :]).ravel()
    patterns = np.concatenate([patterns, np.random.default_rng(0).integers(0, 2**32, 2_000_000, dtype=np.uint32)])
    values = patterns.view(np.float32)
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16).astype(np.float32)
        ours = float16_rounded(values)
    same = (ours.view(np.uint32) == expected.view(np.uint32)) | (np.isnan(ours) & np.isnan(expected))
    assert same.all(), values[~same][:5]
    just_above_a_tie = 1 + 2**-11 + 2**-40  # a float64 rounded to float32 first would be the tie itself
    assert float16_rounded(np.float64(just_above_a_tie)) == np.float16(just_above_a_tie)
    with np.errstate(over="ignore"):
        assert float16_rounded(np.float32(70000.0)).shape == () and float16_rounded(np.float32(70000.0)) == np.inf
