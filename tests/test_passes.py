"""Each pass on small graphs: op lists before and after, outputs preserved through the
interpreter, and the cases where a pass must hold back."""

import numpy as np
import onnx
import pytest
from conftest import SPECS

from mnc.errors import InputError, Loc
from mnc.ir.graph import Graph
from mnc.ir.interpreter import run
from mnc.ir.shapes import infer_shapes
from mnc.passes.base import PASSES, Pass
from mnc.passes.manager import PassError, resolve_pipeline, run_pipeline
from mnc.pipeline import build, compile_spec

SRC = Loc("unit.mnet", 3, 5)


def _conv(g, name, x, cin, out, k=3, stride=1, groups=1, bias=False, rng=None):
    pad = k // 2
    g.add(
        name,
        "conv",
        [x],
        attrs={
            "out_channels": out,
            "kernel": [k, k],
            "stride": [stride, stride],
            "pads": [pad, pad, pad, pad],
            "groups": groups,
            "bias": bias,
            "fused_act": None,
        },
        src=SRC,
    )
    params = {"weight": rng.standard_normal((out, cin // groups, k, k)).astype(np.float32)}
    if bias:
        params["bias"] = rng.standard_normal(out).astype(np.float32)
    g.node(name).params = params
    return name


def _bn(g, name, x, c, rng):
    g.add(name, "batchnorm", [x], attrs={"eps": 1e-3}, src=SRC)
    g.node(name).params = {
        "gamma": rng.uniform(0.5, 2, c).astype(np.float32),
        "beta": rng.normal(0, 1, c).astype(np.float32),
        "mean": rng.normal(0, 1, c).astype(np.float32),
        "var": rng.uniform(0.1, 3, c).astype(np.float32),
    }
    return name


def _net(k=3, stride=1, groups="1", bias=False, act="relu6", seed=0):
    """input → conv → bn → act → pool → flatten → fc → bn: the shapes passes meet in MobileNets."""
    rng = np.random.default_rng(seed)
    c = 4
    g_ = c if groups == "dw" else int(groups)
    out = c if groups == "dw" else 8
    g = Graph("unit")
    g.add("input", "input", attrs={"shape": [c, 10, 10]}, src=SRC)
    _conv(g, "conv", "input", c, out, k, stride, g_, bias, rng)
    _bn(g, "conv.bn", "conv", out, rng)
    g.add("conv.act", "act", ["conv.bn"], attrs={"fn": act}, src=SRC)
    g.add("pool", "global_avgpool", ["conv.act"], src=SRC)
    g.add("flat", "flatten", ["pool"], src=SRC)
    g.add("fc", "fc", ["flat"], attrs={"out_features": 5, "bias": True, "fused_act": None}, src=SRC)
    g.node("fc").params = {
        "weight": rng.standard_normal((5, out)).astype(np.float32),
        "bias": rng.standard_normal(5).astype(np.float32),
    }
    _bn(g, "fc.bn", "fc", 5, rng)
    g.outputs = ["fc.bn"]
    return infer_shapes(g)


def _outputs(g, seed=1):
    x = np.random.default_rng(seed).standard_normal((3, *g.node("input").shape))
    return run(g, {"input": x})[g.outputs[0]]


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", ["1", "2", "dw"])
@pytest.mark.parametrize("bias", [False, True])
def test_fold_bn_then_fuse_act_preserve_outputs(k, stride, groups, bias):
    g = _net(k, stride, groups, bias)
    folded, _ = run_pipeline(g, ["fold_bn"])
    assert g.ops() == ["input", "conv", "batchnorm", "act", "global_avgpool", "flatten", "fc", "batchnorm"]
    assert folded.ops() == ["input", "conv", "act", "global_avgpool", "flatten", "fc"]
    np.testing.assert_allclose(_outputs(folded), _outputs(g), rtol=1e-5, atol=1e-6)
    fused, _ = run_pipeline(folded, ["fuse_act"])
    assert fused.ops() == ["input", "conv", "global_avgpool", "flatten", "fc"]
    assert fused.node("conv").attrs["fused_act"] == "relu6"
    np.testing.assert_allclose(_outputs(fused), _outputs(g), rtol=1e-5, atol=1e-6)


def test_graph_output_names_survive_folding():
    g = _net()
    optimised, _ = run_pipeline(g, resolve_pipeline("default"))
    assert optimised.outputs == ["fc.bn"]  # the fc took over the batch norm's name
    assert optimised.node("fc.bn").op == "fc" and "fc" not in optimised
    assert g.outputs == ["fc.bn"] and g.node("fc.bn").op == "batchnorm"  # the input graph is untouched


def test_conv_with_two_users_is_not_folded():
    g = _net()
    g.add("side", "global_avgpool", ["conv"], src=SRC)
    g.add("sum", "add", ["pool", "side"], src=SRC)
    g.disconnect("pool", "flat")
    g.connect("sum", "flat", port=0)
    infer_shapes(g)
    optimised, records = run_pipeline(g, ["fold_bn", "fuse_act"])
    assert optimised.node("conv.bn").op == "batchnorm"  # conv also feeds 'side'
    assert optimised.node("conv.act").op == "act"  # the bn is not a conv
    assert "fc.bn" in optimised.outputs and optimised.node("fc.bn").op == "fc"
    np.testing.assert_allclose(_outputs(optimised), _outputs(g), rtol=1e-5, atol=1e-6)


def test_graph_output_conv_is_not_folded():
    g = _net()
    g.outputs = ["conv", "fc.bn"]
    optimised, _ = run_pipeline(g, ["fold_bn"])
    assert optimised.node("conv.bn").op == "batchnorm" and optimised.node("conv").op == "conv"


def test_batchnorm_after_fused_activation_is_not_folded():
    g = _net()
    g.node("conv").attrs["fused_act"] = "relu"
    optimised, _ = run_pipeline(g, ["fold_bn"])
    assert optimised.node("conv.bn").op == "batchnorm"


def test_unfusable_activation_stays():
    g = _net(act="identity")
    optimised, _ = run_pipeline(g, ["fold_bn", "fuse_act"])
    assert "act" in optimised.ops()
    cleaned, _ = run_pipeline(optimised, ["cleanup"])
    assert "act" not in cleaned.ops()  # identity removed by cleanup instead
    np.testing.assert_allclose(_outputs(cleaned), _outputs(g), rtol=1e-5, atol=1e-6)


def test_cleanup_removes_dead_nodes_and_redundant_flatten():
    g = _net()
    g.add("dead", "act", ["conv.act"], attrs={"fn": "relu"}, src=SRC)
    g.add("flat2", "flatten", ["fc.bn"], src=SRC)
    g.outputs = ["flat2"]
    infer_shapes(g)
    cleaned, (record,) = run_pipeline(g, ["cleanup"])
    assert "dead" not in cleaned and cleaned.outputs == ["flat2"] and cleaned.node("flat2").op == "batchnorm"
    assert record["removed"] == 2 and record["changed"]
    np.testing.assert_allclose(_outputs(cleaned), _outputs(g))


def test_pass_records():
    _, records = run_pipeline(_net(), resolve_pipeline("default"))
    assert [r["name"] for r in records] == ["fold_bn", "fuse_act", "cleanup"]
    fold = records[0]
    assert fold["ops_before"]["batchnorm"] == 2 and "batchnorm" not in fold["ops_after"]
    assert fold["removed"] == 2 and fold["nodes_before"] - fold["nodes_after"] == 2
    assert records[2]["changed"] is False


@pytest.mark.parametrize(
    "text,message",
    [
        ("fuse_act,fold_bn", "'fold_bn' must run before 'fuse_act'"),
        ("fold_bn,fuse_ac", "unknown pass 'fuse_ac'; did you mean 'fuse_act'?"),
        (",", "name a pipeline"),
    ],
)
def test_pipeline_is_checked_before_it_runs(text, message):
    with pytest.raises(InputError, match=message):
        resolve_pipeline(text)


def test_fuse_without_fold_is_allowed():
    assert resolve_pipeline("fuse_act,cleanup") == ["fuse_act", "cleanup"]
    assert resolve_pipeline("none") == []


def test_a_broken_pass_is_named_with_the_passes_before_it_the_node_and_the_spec_line(monkeypatch):
    def breaks_shapes(graph):
        graph.node("conv").attrs["stride"] = [2, 2]
        return True

    monkeypatch.setitem(PASSES, "broken", Pass("broken", "test", breaks_shapes, after=("fold_bn",)))
    with pytest.raises(PassError) as info:
        run_pipeline(_net(), ["fold_bn", "fuse_act", "broken"])
    message = info.value.render()
    assert "internal error in pass 'broken' at node 'conv' (passes run before it: fold_bn, fuse_act)" in message
    assert message.startswith("unit.mnet:3:5: error:") and info.value.exit_code == 70  # an internal error


def test_a_broken_promise_is_caught(monkeypatch):
    monkeypatch.setitem(PASSES, "lazy", Pass("lazy", "test", lambda g: False, ensures=("batchnorm_folded",)))
    with pytest.raises(PassError, match="promised 'batchnorm_folded' but 2 node"):
        run_pipeline(_net(), ["lazy"])


@pytest.mark.parametrize("spec", ["v1.mnet", "v2.mnet"])
def test_default_pipeline_leaves_no_batchnorm_or_activation_in_mobilenets(spec):
    g = build(SPECS / spec, alpha=0.25, resolution=64).graph
    optimised, _ = run_pipeline(g, resolve_pipeline("default"))
    ops = set(optimised.ops())
    assert "batchnorm" not in ops and "act" not in ops
    assert not optimised.dead_nodes()


@pytest.mark.parametrize(
    "spec,alpha,resolution",
    [
        ("v1.mnet", 0.25, 128),
        ("v1.mnet", 1.0, 160),
        ("v1.mnet", 0.5, 224),
        ("v2.mnet", 0.35, 96),
        ("v2.mnet", 1.0, 224),
        ("v2.mnet", 1.4, 160),
        ("v2.mnet", 0.75, 128),
    ],
)
def test_optimised_artifact_matches_unoptimised_reference(tmp_path, spec, alpha, resolution):
    result = compile_spec(SPECS / spec, alpha=alpha, resolution=resolution, out_dir=tmp_path)
    v = result.typed.verification
    assert v.passed and v.runs[0].comparison.max_rel_err <= 1e-4
    assert "graph optimisations disabled" in v.reference and v.reference_check.passed
    assert [p["name"] for p in result.typed.passes] == ["fold_bn", "fuse_act", "cleanup"]
    model = onnx.load(str(result.artifact))
    op_types = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in op_types
    clip_inputs = {n.input[0] for n in model.graph.node if n.op_type in ("Clip", "Relu")}
    conv_outputs = {n.output[0] for n in model.graph.node if n.op_type == "Conv"}
    assert clip_inputs and clip_inputs <= conv_outputs  # every activation directly follows a conv
    assert dict((p.key, p.value) for p in model.metadata_props)["mnc.passes"] == "fold_bn,fuse_act,cleanup"
