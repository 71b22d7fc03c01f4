"""MobileNetV3, squeeze-and-excite, hard-swish, and blocks written in the spec language."""

import numpy as np
import onnx
import pytest
from conftest import ROOT, SPECS, TINY, spec_errors
from safetensors.numpy import load_file

from mnc.backends.coreml import run_simulated as run_coreml_simulated
from mnc.backends.onnx import run_onnx
from mnc.errors import InputError
from mnc.frontend import build_graph, load_spec, load_spec_text
from mnc.ir.activations import ACTIVATIONS
from mnc.ir.cost import graph_cost
from mnc.ir.interpreter import run
from mnc.passes.manager import resolve_pipeline, run_pipeline
from mnc.pipeline import TargetOptions, build, compile_spec

FIXTURES = ROOT / "tests" / "fixtures" / "torchvision"
EXAMPLES = ROOT / "examples" / "specs"


@pytest.mark.parametrize(
    "spec,params,macs",
    [
        ("v3_large.mnet", 5_483_032, 216_589_760),  # torchvision MobileNet_V3_Large_Weights meta
        ("v3_small.mnet", 2_542_856, 56_510_400),  # torchvision MobileNet_V3_Small_Weights meta
    ],
)
def test_v3_reproduces_torchvision_counts(spec, params, macs):
    spec = load_spec(SPECS / spec)
    cost = graph_cost(build_graph(spec, spec.config()))
    assert (cost.params, cost.macs) == (params, macs)


def test_squeeze_excite_reduces_to_a_multiple_of_8_of_a_quarter_of_the_expansion():
    spec = load_spec(SPECS / "v3_large.mnet")
    g = build_graph(spec, spec.config())
    # stage4: exp 72 → make_divisible(72 // 4 = 18, 8) = 24; stage12: exp 672 → 168
    assert g.node("stage4.block0.se.fc1").attrs["out_channels"] == 24
    assert g.node("stage12.block0.se.fc1").attrs["out_channels"] == 168
    assert g.node("stage4.block0.se.fc2.act").attrs["fn"] == "hsigmoid"
    assert g.node("stage4.block0.se").op == "mul" and g.node("stage4.block0.dw").attrs["kernel"] == [5, 5]
    assert g.node("stage1.block0.dw.act").attrs["fn"] == "relu" and "stage1.block0.expand" not in g
    assert g.node("stage1.block0.dw.bn").attrs["eps"] == 0.001


def test_hard_activations_are_mobilenets_not_keras():
    x = np.array([-4.0, -3.0, -1.0, 0.0, 1.5, 3.0, 5.0])
    np.testing.assert_allclose(ACTIVATIONS["hsigmoid"].function(x), np.clip(x + 3, 0, 6) / 6)
    np.testing.assert_allclose(ACTIVATIONS["hswish"].function(x), x * np.clip(x + 3, 0, 6) / 6)
    assert ACTIVATIONS["hsigmoid"].function(np.array([1.0]))[0] != 0.2 * 1.0 + 0.5


def test_onnx_lowering_and_fusion_of_hard_activations(tmp_path):
    result = compile_spec(SPECS / "v3_small.mnet", resolution=96, out_dir=tmp_path)
    model = onnx.load(str(result.artifact))
    types = [n.op_type for n in model.graph.node]
    assert "HardSwish" in types and "Mul" in types and "BatchNormalization" not in types
    sigmoids = [n for n in model.graph.node if n.op_type == "HardSigmoid"]
    assert sigmoids and all(
        {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        == {"alpha": pytest.approx(1 / 6), "beta": 0.5}
        for n in sigmoids
    )
    fused = {r["name"]: r for r in result.typed.passes}["fuse_act"]
    assert "act" not in fused["ops_after"]  # hswish, hsigmoid and relu all fused into their convs


@pytest.mark.parametrize(
    "arch,spec", [("mobilenet_v3_large", "v3_large.mnet"), ("mobilenet_v3_small", "v3_small.mnet")]
)
@pytest.mark.parametrize("resolution", [64, 96])
def test_v3_matches_torchvision_through_onnx_and_coreml(tmp_path, arch, spec, resolution):
    io = load_file(FIXTURES / f"{arch}_w1.0_r{resolution}.safetensors")
    expected, scale = io["output"], np.abs(io["output"]).max()
    for target, precision, execute, limit in [
        ("onnx", None, run_onnx, 1e-4),
        ("coreml", "fp32", run_coreml_simulated, 1e-4),
        ("coreml", "fp16", run_coreml_simulated, 0.15),
    ]:
        result = compile_spec(
            SPECS / spec,
            resolution=resolution,
            weights=FIXTURES / f"{arch}_w1.0.npz",
            target=target,
            out_dir=tmp_path / f"{target}{precision}",
            options=TargetOptions(precision=precision),
        )
        assert result.typed.weights.layout == "torchvision_mobilenet_v3" and result.typed.classes == 10
        (y,) = execute(result.artifact, {"input": io["input"]})
        assert np.abs(y - expected).max() <= limit * scale, (target, precision)
        assert (y.argmax(1) == expected.argmax(1)).all(), (target, precision)


# ---- user-defined blocks ----------------------------------------------------------------------

HEADER = TINY[: TINY.index("| operator")]


def test_a_user_block_builds_what_the_builtin_does():
    mine = (
        HEADER
        + """
block inverted(t, c: channels, s = 1, k = 3)
    expand  = conv(1, round(in * t))                               if round(in * t) != in
    dw      = conv(k, round(in * t), stride=s, groups=round(in * t))
    project = conv(1, c, act=none)
    add(input)                                                     if s == 1 and in == c
end

| operator       | t | c  | n | s |
|----------------|---|----|---|---|
| conv2d 3x3     | - | 16 | 1 | 2 |
| inverted       | 6 | 24 | 2 | 2 |
| avgpool global |   |    |   |   |
| fc             |   | k  |   |   |
"""
    )
    ours, builtin = load_spec_text(mine, "mine.mnet"), load_spec_text(TINY, "tiny.mnet")
    a = build(ours, alpha=0.75, resolution=64).graph
    b = build(builtin, alpha=0.75, resolution=64).graph
    assert [(n, a.node(n).op, a.node(n).shape) for n in a.topo()] == [
        (n, b.node(n).op, b.node(n).shape) for n in b.topo()
    ]
    assert "stage1.block1.add" in a


def test_named_skips_and_conditions():
    text = (
        HEADER
        + """
block twin(c: channels, deep: flag = no)
    first  = conv(3, c)
    second = conv(3, c, act=none)
    third  = conv(1, c, act=none)                                  if deep
    add(first)
end

| operator       | c  | deep |
|----------------|----|------|
| conv2d 3x3     | 16 |      |
| twin           | 16 |  ✓   |
| twin           | 24 |  -   |
| avgpool global |    |      |
| fc             | k  |      |
"""
    )
    g = build(load_spec_text(text, "twin.mnet"), resolution=32).graph
    assert g.inputs_of("stage1.block0.add") == ["stage1.block0.first.act", "stage1.block0.third.bn"]
    assert "stage2.block0.third" not in g and g.inputs_of("stage2.block0.add")[0] == "stage2.block0.first.act"
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
    assert np.isfinite(run(g, {"input": x})[g.outputs[0]]).all()


@pytest.mark.parametrize(
    "block,line,col,message",
    [
        (
            "block b(c: chanels)\n    conv(1, c)\nend",
            1,
            9,
            "unknown parameter type 'chanels'; did you mean 'channels'?",
        ),
        ("block b(c: channels)\n    cnv(1, c)\nend", 2, 5, "unknown layer 'cnv'; did you mean 'conv'?"),
        (
            "block b(c: channels)\n    conv(1, c, strid=2)\nend",
            2,
            22,
            "'conv' has no argument 'strid'; did you mean 'stride'?",
        ),
        ("block b(c: channels)\n    conv(1)\nend", 2, 5, "'conv' needs its 'c' argument"),
        ("block b(c: channels)\n    conv(1, cc)\nend", 2, 13, "unknown name 'cc'; did you mean 'c'?"),
        (
            "block b(c: channels)\n    conv(1, c)\n    add(skip)\nend",
            3,
            9,
            "add() takes the name of an earlier layer or `input`",
        ),
        ("block b(c: channels)\n    conv(1, ceil(c))\nend", 2, 13, "unknown function 'ceil'"),
        ("block b(c: channels, c)\n    conv(1, c)\nend", 1, 22, "parameter 'c' of block 'b' appears twice"),
        ("block b(c: channels)\n    conv(1, c)\n    conv(3, c)\nend", 3, 5, "two layers named 'conv' in block 'b'"),
        ("block bottleneck(c: channels)\n    conv(1, c)\nend", 1, 7, "block 'bottleneck' is built in"),
    ],
)
def test_errors_in_block_definitions_point_at_the_definition(block, line, col, message):
    text = HEADER + block + "\n\n" + TINY[TINY.index("| operator") :]
    offset = HEADER.count("\n")
    located = [(d.loc.line - offset, d.loc.col, d.message) for d in spec_errors(text)]
    assert any(ln == line and c == col and message in m for ln, c, m in located), located


def test_a_block_defined_twice():
    text = (
        HEADER
        + "block b(c: channels)\n    conv(1, c)\nend\nblock b(c: channels)\n    conv(3, c)\nend\n"
        + TINY[TINY.index("| operator") :]
    )
    (d,) = spec_errors(text)
    assert d.message == "block 'b' is defined twice" and d.notes[0][0] == "first defined here"


def test_errors_while_running_a_block_point_at_definition_and_use_site():
    text = (
        HEADER
        + """
block grouped(c: channels)
    conv = conv(3, c, groups=3)
end

| operator       | c  |
|----------------|----|
| conv2d 3x3     | 16 |
| grouped        | 24 |
| avgpool global |    |
| fc             | k  |
"""
    )
    spec = load_spec_text(text, "grouped.mnet")
    with pytest.raises(InputError) as info:
        build_graph(spec, spec.config(resolution=32))
    (d,) = info.value.diagnostics
    assert "16 input and 24 output channels cannot be split into 3 groups" in d.message
    assert d.loc.line == 11 and d.notes[0][0] == "in the block used here" and d.notes[0][1].line == 17


def test_columns_must_be_parameters_of_the_rows_block():
    text = TINY.replace("| operator       | t | c  | n | s |", "| operator       | t | c  | n | se |")
    text = text.replace("| bottleneck     | 6 | 24 | 2 | 2 |", "| bottleneck     | 6 | 24 | 2 | ✓ |")
    diagnostics = spec_errors(text)
    assert any("'bottleneck' has no parameter 'se'" in d.message for d in diagnostics)


@pytest.mark.parametrize("expr", ["c + 0", "c - 0", "c + c * 0", "0 * c + c", "c - 0 * (c // 2)"])
def test_a_zero_operand_is_an_ordinary_number(expr):
    # Each operator is evaluated only when chosen: `x + 0` does not compute `x / 0` on the way.
    text = (
        HEADER
        + f"""
block b(c: channels)
    conv = conv(1, {expr})
end

| operator       | c  |
|----------------|----|
| conv2d 3x3     | 16 |
| b              | 24 |
| avgpool global |    |
| fc             | k  |
"""
    )
    spec = load_spec_text(text, "zero.mnet")
    assert build_graph(spec, spec.config(resolution=32)).node("stage1.block0.conv").attrs["out_channels"] == 24


def _comparing(condition: str) -> str:
    return (
        HEADER
        + f"""
block b(c: channels, nl: act = default)
    wide = conv(1, c, act=nl)
    extra = conv(1, c, act=nl)    if {condition}
end

| operator       | c  | nl |
|----------------|----|----|
| conv2d 3x3     | 16 |    |
| b              | 24 | RE |
| b              | 24 | HS |
| b              | 24 |    |
| avgpool global |    |    |
| fc             | k  |    |
"""
    )


@pytest.mark.parametrize(
    "condition,built",
    [
        ("nl == hswish", [False, True, False]),
        ("nl == re", [True, False, False]),
        ("nl != relu", [False, True, True]),
        ("nl == default", [False, False, True]),  # the spec's activation (TINY's: relu6)
        ("nl == relu6", [False, False, True]),
        ("nl == none", [False, False, False]),
    ],
)
def test_activations_compare_by_what_they_compute(condition, built):
    """A cell gives an activation as a word of the table, an expression as a word of the block, and
    `default` means the spec's: `==` compares what they name."""
    spec = load_spec_text(_comparing(condition), "compare.mnet")
    assert "activation = relu6" in HEADER
    g = build_graph(spec, spec.config(resolution=32))
    assert [f"stage{i}.block0.extra" in g for i in (1, 2, 3)] == built


def test_ordering_activations_is_a_located_error():
    spec = load_spec_text(_comparing("nl < hswish"), "compare.mnet")
    with pytest.raises(InputError) as info:
        build_graph(spec, spec.config(resolution=32))
    (d,) = info.value.diagnostics
    assert d.message == "expected a number, got 'relu'" and d.loc.line == 12  # the condition
    assert d.notes[0][0] == "in the block used here" and d.notes[0][1].line == 18  # the RE row


# ---- the example architectures ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,params,macs",
    [
        ("mnasnet_a1", 3_887_038, 311_579_072),  # the paper: 3.9 M parameters, 312 M multiply-adds
        ("efficientnet_lite0", 4_652_008, 385_187_552),  # PyTorch reproductions: 4.652 M, 0.385 GMACs
        # timm's efficientnet_b0: its parameter count, and torch's FlopCounterMode's FLOPs / 2 at 224²
        ("efficientnet_b0", 5_288_548, 385_814_752),
    ],
)
def test_example_counts_match_published_figures(name, params, macs):
    spec = load_spec(EXAMPLES / f"{name}.mnet")
    cost = graph_cost(build_graph(spec, spec.config()))
    assert (cost.params, cost.macs) == (params, macs)


@pytest.mark.parametrize("name", ["mnasnet_a1", "efficientnet_lite0", "efficientnet_b0"])
@pytest.mark.parametrize("target,precision", [("onnx", None), ("coreml", "fp32"), ("coreml", "fp16")])
def test_examples_compile_and_verify(tmp_path, name, target, precision):
    result = compile_spec(
        EXAMPLES / f"{name}.mnet",
        alpha=0.5,
        resolution=96,
        target=target,
        out_dir=tmp_path,
        options=TargetOptions(precision=precision),
    )
    assert result.typed.verification.passed
    optimised, _ = run_pipeline(
        build(EXAMPLES / f"{name}.mnet", alpha=0.5, resolution=96).graph, resolve_pipeline("default")
    )
    assert "batchnorm" not in optimised.ops()
