"""The Target seam: every registered target lowers every IR op and activation or refuses it with a
located error naming the target, the compiler and the command line name no target, and the
activation registry is the one list of activations."""

import ast
import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from mnc.artifact import ArtifactRecord
from mnc.backends import TARGETS
from mnc.backends.lowering import walk
from mnc.backends.target import NetworkFacts, TargetOptions
from mnc.cli import main
from mnc.errors import InputError, Loc
from mnc.ir import activations
from mnc.ir.activations import ACTIVATIONS
from mnc.ir.graph import Graph, GraphError
from mnc.ir.node import Affine, ChannelQuantized, QParams
from mnc.ir.ops import OPS
from mnc.ir.shapes import infer_shapes
from mnc.passes.manager import PassError, resolve_pipeline, run_pipeline
from mnc.passes.rewrites import REWRITES, run_rewrites
from mnc.pipeline import build, compile_spec
from mnc.pipeline.compile import pass_options
from mnc.pipeline.quantize import Quantization

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
        i = conv(1, c, act=silu)
        j = conv(1, c, act=gelu)
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


def _every_op() -> Graph:
    """A small float graph with every op of the registry and every activation (as an `act` node, and
    fused into a conv and an fc), weighted, with two outputs."""
    g = Graph("every_op")
    src = Loc("every.mnet", 1, 1)

    def conv(name, x, out, k=3, groups=1, bias=True, dilation=1, fused_act=None):
        pad = dilation * (k - 1) // 2
        attrs = {"out_channels": out, "kernel": [k, k], "stride": [1, 1], "pads": [pad] * 4, "groups": groups}
        attrs.update(bias=bias, dilation=[dilation, dilation], fused_act=fused_act)
        g.add(name, "conv", [x], src=src, attrs={k: v for k, v in attrs.items() if v is not None})

    g.add("input", "input", attrs={"shape": [3, 8, 8]}, src=src)
    conv("stem", "input", 8, fused_act="hswish")
    conv("dw", "stem", 8, groups=8, bias=False, dilation=2, fused_act="relu6")
    g.add("bn", "batchnorm", ["dw"], src=src, attrs={"eps": 1e-3})
    g.add("affine", "affine", ["bn"], src=src, attrs={"fused_act": "relu6"})
    g.add("affine_one", "affine", ["affine"], src=src, attrs={"per_channel": False, "fused_act": "silu"})
    last = "affine_one"
    for fn in ACTIVATIONS:
        g.add(f"act_{fn}", "act", [last], src=src, attrs={"fn": fn})
        last = f"act_{fn}"
    g.add("sum", "add", ["bn", last, "stem"], src=src)
    g.add("gated", "mul", ["sum", "stem"], src=src)
    g.add("pooled", "avgpool", ["gated"], src=src, attrs={"kernel": [2, 2], "stride": [2, 2]})
    g.add("up", "resize", ["pooled"], src=src, attrs={"size": [8, 8]})
    g.add("joined", "concat", ["up", "gated"], src=src)
    g.add("rows", "per_anchor", ["joined"], src=src, attrs={"columns": 4})
    g.add("pool", "global_avgpool", ["joined"], src=src)
    g.add("flat", "flatten", ["pool"], src=src)
    g.add("fc", "fc", ["flat"], src=src, attrs={"out_features": 5, "bias": True, "fused_act": "relu"})
    g.add("probabilities", "softmax", ["fc"], src=src)
    g.outputs = ["probabilities", "rows"]
    g.output_labels = {"probabilities": "probabilities", "rows": "rows"}
    infer_shapes(g)
    rng = np.random.default_rng(0)
    for name in g:
        shapes = g.param_shapes(name)
        g.node(name).params = {k: rng.uniform(0.5, 1.5, s).astype(np.float32) for k, s in shapes.items()}
    g.validate(require_params=True)
    return g


def test_the_every_op_graph_has_every_op_and_activation():
    g = _every_op()
    assert {g.node(n).op for n in g} == set(OPS), "a new op: add it to _every_op"
    assert {g.node(n).attrs["fn"] for n in g if g.node(n).op == "act"} == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("image_input", [False, True], ids=["float", "image"])
def test_every_target_lowers_every_op_and_activation(tmp_path, name, image_input):
    """Every op (the graph's input too: the model's input, an image's pixels too) and activation has
    a lowering in the target's table, or the target asks for a rewrite that leaves none of it, and
    each one runs: the target writes a graph that uses them all, after its rewrites."""
    target = TARGETS[name]
    if image_input and "image_input" not in target.choices:
        pytest.skip(f"{name} takes no image input")
    lowering = target.lowering()
    assert lowering.target == name
    assert set(lowering.ops) == set(OPS)
    record = ArtifactRecord("0", "every_op", "", "", 1.0, 8, 5, 0, (), image_input=image_input or None)
    facts = NetworkFacts(5, (0.5,) * 3, (0.25,) * 3)
    rewrites = target.rewrites(record, facts)
    rewritten = {fn for r, _ in rewrites for fn in REWRITES[r].removes_activations}
    assert set(lowering.activations) | rewritten == set(ACTIVATIONS)
    assert not set(lowering.activations) & rewritten, "an activation both lowered and rewritten"
    options = target.options(TargetOptions(**({"image_input": True} if image_input else {})), facts)
    path = tmp_path / f"every{target.suffix}"
    graph, _ = run_rewrites(_every_op(), rewrites, target=name)
    target.write(graph, path, record, options)
    assert path.exists()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_what_a_target_cannot_lower_is_a_located_error_naming_it(name):
    lowering = TARGETS[name].lowering()
    g = _every_op()
    # The target's table without resize, every other lowering a stub: what is under test is the refusal.
    stubs = {op: (lambda ctx, name, node, xs: name) for op in lowering.ops if op != "resize"}
    without = dataclasses.replace(lowering, ops=stubs, around=None)
    with pytest.raises(InputError, match=f"target='{name}' cannot express the op 'resize' \\(layer 'up'\\)") as info:
        walk(g, _Values(), without)
    assert info.value.diagnostics[0].loc == g.node("up").src
    without = dataclasses.replace(lowering, activations={})
    with pytest.raises(InputError, match=f"target='{name}' cannot express the activation 'relu'") as info:
        without.activate(None, "relu", None, None, "act_relu", g.node("act_relu"))
    assert info.value.diagnostics[0].loc == g.node("act_relu").src


class _Values:
    """A lowering context for stubs."""

    def __init__(self):
        self.values = {}


def test_tflite_refuses_a_grouped_convolution_at_its_layer(tmp_path):
    g = _every_op()
    g.node("dw").attrs["groups"] = 4
    g.node("dw").params["weight"] = np.ones((8, 2, 3, 3), np.float32)
    target = TARGETS["tflite"]
    options = target.options(TargetOptions(), NetworkFacts(5, (0.5,) * 3, (0.25,) * 3))
    record = ArtifactRecord("0", "every_op", "", "", 1.0, 8, 5, 0, ())
    with pytest.raises(InputError, match="target='tflite' cannot express a grouped convolution") as info:
        target.write(g, tmp_path / "g.tflite", record, options)
    assert info.value.diagnostics[0].loc == g.node("dw").src


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


@pytest.mark.parametrize(
    "name,options",
    [("onnx", None), ("ort", None), ("tflite", None), ("coreml", TargetOptions(deployment_target="iOS17"))],
)
def test_int8_of_every_activation_is_verified_layer_by_layer(tmp_path, name, options):
    """A target that lowers an activation as several runtime ops (TFLite's swish: LOGISTIC on its fixed
    grid, then MUL) still computes each IR layer within one step of mnc's fake-quant reference."""
    spec = tmp_path / "acts.mnet"
    spec.write_text(EVERY_ACTIVATION)
    result = compile_spec(
        spec, target=name, options=options, quantization=Quantization("synthetic", samples=8), out_dir=tmp_path
    )
    layers = result.typed.verification.check("layers")
    assert layers.passed and layers.section["max_lsb"] <= 1


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
    from mnc.frontend.expressions import ACT_WORDS

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


@pytest.mark.parametrize("target,flag,value", [("tflite", "precision", "fp8"), ("coreml", "deployment_target", "iOS9")])
def test_a_target_option_value_is_named_as_the_caller_gave_it(tmp_path, capsys, target, flag, value):
    """The Python API names the keyword argument; the command line its flag."""
    from mnc.api import compile as compile_api

    with pytest.raises(InputError) as info:
        compile_api(
            ROOT / "specs" / "v1.mnet", target=target, alpha=0.25, resolution=32, out_dir=tmp_path, **{flag: value}
        )
    assert f"{flag}='{value}': choose one of" in str(info.value) and "--" not in str(info.value)
    argv = ["compile", str(ROOT / "specs" / "v1.mnet"), "--target", target, "-o", str(tmp_path)]
    assert main([*argv, "--" + flag.replace("_", "-"), value]) == 2
    assert f"--{flag.replace('_', '-')} {value}: choose one of" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
