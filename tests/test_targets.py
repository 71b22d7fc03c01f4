"""The Target seam: every registered target lowers every IR op and activation, the compiler and
the command line name no target, and the activation registry is the one list of activations."""

import ast
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from mnc.backends import TARGETS
from mnc.cli import main
from mnc.ir import activations
from mnc.ir.activations import ACTIVATIONS
from mnc.ir.graph import Graph, GraphError
from mnc.ir.node import Affine, ChannelQuantized, QParams
from mnc.ir.ops import OPS
from mnc.passes.manager import PassError, resolve_pipeline, run_pipeline
from mnc.pipeline import build, compile_spec
from mnc.pipeline.compile import pass_options

# A network that uses every activation twice: as an `act` node (after a conv with batch norm, so
# fold_bn runs first) and fused into a conv; plus residual add, squeeze-excite mul, pooling, fc, softmax.
EVERY_ACTIVATION = textwrap.dedent("""\
    name = every_activation
    input_channels = 3
    base_resolution = 16
    classes = 5
    activation = relu
    width_rounding = make_divisible(divisor=8)
    padding = symmetric

    block all_acts(c: channels)
        a = conv(3, c, act=relu)
        b = conv(1, c, act=relu6)
        c1 = conv(1, c, act=hswish)
        d = conv(1, c, act=hsigmoid)
        e = conv(1, c, act=sigmoid)
        f = conv(1, c, act=none)
        s = se(8, act=relu, gate=sigmoid)
        r = add(b)
        g = act(hswish)
        h = act(identity)
    end

    | operator       | c  | s |
    |----------------|----|---|
    | conv2d 3x3     | 16 | 2 |
    | all_acts       | 16 |   |
    | avgpool global |    |   |
    | fc             | k  |   |
    | softmax        |    |   |
    """)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_has_a_lowering_for_every_op_and_activation(name):
    target = TARGETS[name]
    assert set(OPS) - {"input"} <= set(target.ops), "the graph input is each target's model input"
    assert set(target.activations) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_activation_compiles_and_verifies_on_every_target(tmp_path, name):
    spec = tmp_path / "acts.mnet"
    spec.write_text(EVERY_ACTIVATION)
    graph = build(spec).graph
    used = {graph.node(n).attrs["fn"] for n in graph if graph.node(n).op == "act"}
    assert used == set(ACTIVATIONS)
    pipeline = resolve_pipeline("default")
    optimised, _ = run_pipeline(graph, pipeline, options=pass_options(TARGETS[name], pipeline))
    fused = {optimised.node(n).attrs.get("fused_act") for n in optimised} - {None}
    assert fused == set(TARGETS[name].fused_activations)  # the rest stay act nodes of their own
    result = compile_spec(spec, target=name, out_dir=tmp_path)
    assert result.typed.verification.passed


def _string_constants(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_the_compiler_and_the_command_line_name_no_target():
    files = [
        *sorted((ROOT / "mnc" / "cli").glob("*.py")),
        *sorted((ROOT / "mnc" / "pipeline").glob("*.py")),
        *sorted((ROOT / "mnc" / "verification").glob("*.py")),
    ]
    for path in files:
        named = _string_constants(path) & set(TARGETS)
        assert not named, f"{path.relative_to(ROOT)} names target(s) {named}"


def test_the_docs_table_of_activations_is_the_registrys():
    assert activations.markdown_table() in (ROOT / "docs" / "spec-language.md").read_text()


def test_spec_words_follow_the_registry():
    from mnc.frontend.blocks import ACT_WORDS

    for a in ACTIVATIONS.values():
        for word in (a.name, *a.aliases):
            assert ACT_WORDS[word] == (None if a.name == activations.IDENTITY else a.name)


def test_quantize_pass_without_quantize_is_bad_input(tmp_path, capsys):
    code = main(
        [
            "compile",
            str(ROOT / "specs" / "v1.mnet"),
            "--target",
            "onnx",
            "--alpha",
            "0.25",
            "--resolution",
            "32",
            "--passes",
            "fold_bn,fuse_act,cleanup,quantize_int8",
            "-o",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "--passes quantize_int8: int8 quantisation runs with --quantize int8" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_negative_seed_is_bad_input(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compile", str(ROOT / "specs" / "v1.mnet"), "--target", "onnx", "--seed", "-1"])
    assert info.value.code == 2 and "expected a whole number ≥ 0" in capsys.readouterr().err


def _tiny_quantised() -> Graph:
    g = Graph("tiny")
    from mnc.errors import Loc

    src = Loc("t.mnet", 1, 1)
    g.add("input", "input", attrs={"shape": [2, 4, 4]}, src=src)
    g.add(
        "conv",
        "conv",
        ["input"],
        src=src,
        attrs={"out_channels": 3, "kernel": [1, 1], "stride": [1, 1], "pads": [0, 0, 0, 0], "groups": 1, "bias": True},
    )
    g.outputs = ["conv"]
    from mnc.ir.shapes import infer_shapes

    infer_shapes(g)
    g.node("conv").params = {"weight": np.ones((3, 2, 1, 1), np.float32), "bias": np.zeros(3, np.float32)}
    g.node("input").qparams = QParams(Affine(0.1, 128))
    g.node("conv").qparams = QParams(
        Affine(0.1, 0),
        ChannelQuantized(np.ones((3, 2, 1, 1), np.int8), np.ones(3), 8),
        ChannelQuantized(np.zeros(3, np.int32), np.full(3, 0.1)),
    )
    return g


def test_quantisation_parameters_are_validated():
    g = _tiny_quantised()
    g.validate(require_params=True)
    g.node("conv").qparams = QParams(Affine(0.1, 300))
    with pytest.raises(GraphError, match="outside uint8"):
        g.validate()
    g.node("conv").qparams = QParams(Affine(0.1, 0), ChannelQuantized(np.ones((3, 2, 1, 1), np.int32), np.ones(3)))
    with pytest.raises(GraphError, match="quantised weight is int32"):
        g.validate()
    g.node("conv").qparams = {"output": {"scale": 0.1, "zero_point": 0}}
    with pytest.raises(GraphError, match="must be a QParams"):
        g.validate()


def test_a_pass_checks_what_it_requires_of_the_graph():
    with pytest.raises(PassError, match="requires 'unquantized'"):
        run_pipeline(_tiny_quantised(), ["fold_bn"])
