"""Target rewrites (mnc/passes/rewrites.py) and the affine op they write: each rewrite on small
graphs (op lists before and after, the same outputs through the interpreter), each region checked
and a wrong rewrite caught, every target lowering `affine` (its artifact run by its runtime) or
refusing it at its layer."""

import dataclasses

import numpy as np
import pytest
from conftest import SPECS

from mnc.artifact import ArtifactRecord
from mnc.backends import TARGETS
from mnc.backends.target import INPUT_NAME, NetworkFacts, TargetOptions
from mnc.cli import main
from mnc.errors import InputError, Loc
from mnc.ir.graph import Graph
from mnc.ir.interpreter import run
from mnc.ir.node import Affine, QParams
from mnc.ir.shapes import infer_shapes
from mnc.parallel import run_split
from mnc.passes import hard_sigmoid, image_input, rewrites
from mnc.passes.image_input import NODE, normalisation
from mnc.passes.rewrites import REWRITES, run_rewrites
from mnc.passes.rewriting import RewriteError

SRC = Loc("tiny.mnet", 3, 1)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _graph(act: str = "hsigmoid", fused: bool = False) -> Graph:
    """input → conv (its activation fused, or an act node after it) → global pool."""
    g = Graph("tiny")
    g.add("input", "input", attrs={"shape": [3, 6, 6]}, src=SRC)
    conv = {"out_channels": 4, "kernel": [3, 3], "stride": [1, 1], "pads": [1, 1, 1, 1], "groups": 1, "bias": True}
    g.add("conv", "conv", ["input"], attrs={**conv, "fused_act": act if fused else None}, src=SRC)
    last = "conv"
    if not fused:
        g.add("gate", "act", ["conv"], attrs={"fn": act}, src=SRC)
        last = "gate"
    g.add("pool", "global_avgpool", [last], src=SRC)
    g.outputs = ["pool"]
    infer_shapes(g)
    rng = np.random.default_rng(0)
    p = g.node("conv").params
    p["weight"], p["bias"] = rng.normal(0, 1, (4, 3, 3, 3)).astype(np.float32), rng.normal(0, 1, 4).astype(np.float32)
    g.validate(require_params=True)
    return g


@pytest.mark.parametrize("fused", [False, True], ids=["act", "fused"])
def test_the_hard_sigmoid_becomes_two_affine_maps_computing_the_same(fused):
    g = _graph(fused=fused)
    rewritten, (record,) = run_rewrites(g, [("hard_sigmoid", {})], target="tflite")
    assert "act" not in rewritten.ops() and rewritten.ops().count("affine") == 2
    assert not any(rewritten.node(n).attrs.get("fused_act") == "hsigmoid" for n in rewritten)
    assert record["name"] == "hard_sigmoid" and record["regions"] == 1 and record["max_error_over_bound"] <= 1
    plus3 = "conv.act.plus3" if fused else "gate.plus3"
    assert rewritten.node(plus3).attrs == {"per_channel": False, "fused_act": "relu6"}
    x = np.random.default_rng(1).normal(0, 3, (2, 3, 6, 6))
    np.testing.assert_allclose(run(rewritten, {"input": x})["pool"], run(g, {"input": x})["pool"], rtol=1e-12)


def test_an_int8_hard_sigmoid_keeps_its_grid_and_holds_x_plus_3_on_relu6s():
    g = _graph()
    for n in g:
        g.node(n).qparams = QParams(Affine(0.05, 100))
    rewritten, _ = run_rewrites(g, [("hard_sigmoid", {})], target="tflite")
    assert rewritten.node("gate.plus3").qparams == QParams(Affine(6.0 / 255.0, 0))
    assert rewritten.node("gate").qparams == g.node("gate").qparams  # the layers after it read it unchanged


def test_a_graph_without_what_a_rewrite_replaces_is_left_as_it_was():
    g = _graph(act="relu")
    rewritten, (record,) = run_rewrites(g, [("hard_sigmoid", {})], target="tflite")
    assert rewritten is g and record["regions"] == 0


@pytest.mark.parametrize("pixel_max", [255.0, 1.0])
def test_the_image_input_takes_pixels_and_an_affine_normalises_them(pixel_max):
    g = _graph(act="relu")
    g.node("input").qparams = QParams(Affine(0.02, 120))
    rewritten, (record,) = run_rewrites(
        g, [("image_input", {"mean": MEAN, "std": STD, "pixel_max": pixel_max})], target="onnx"
    )
    assert rewritten.ops()[:3] == ["input", "affine", "conv"] and rewritten.inputs_of("conv") == [NODE]
    assert rewritten.node("input").attrs["pixel_scale"] == pixel_max / 255.0
    # The input's grid describes the normalised values: it moves to the affine; pixels are not quantised.
    assert rewritten.node(NODE).qparams == g.node("input").qparams and rewritten.node("input").qparams is None
    assert record["regions"] == 1 and 0 < record["max_error_over_bound"] <= 1
    pixels = np.random.default_rng(2).integers(0, 256, (2, 3, 6, 6)).astype(np.float64)
    normalised = (pixels / 255 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    np.testing.assert_allclose(
        run(rewritten, {"input": pixels})["pool"], run(g, {"input": normalised})["pool"], rtol=1e-6, atol=1e-6
    )


def _wrong_hard_sigmoid(graph):
    """The hard sigmoid with x + 2.5 for x + 3: a wrong rewrite."""
    regions = hard_sigmoid.REWRITE.run(graph)
    for name in graph:
        if name.endswith(".plus3"):
            graph.node(name).params["shift"] = np.array([2.5])
    return regions


def test_a_rewrite_that_changes_what_a_layer_computes_is_caught_at_that_layer(monkeypatch):
    monkeypatch.setitem(REWRITES, "hard_sigmoid", dataclasses.replace(hard_sigmoid.REWRITE, run=_wrong_hard_sigmoid))
    with pytest.raises(RewriteError, match="rewrite 'hard_sigmoid' for target 'tflite' changed what layer 'gate'") as e:
        run_rewrites(_graph(), [("hard_sigmoid", {})], target="tflite")
    assert e.value.diagnostics[0].loc == SRC and e.value.exit_code == 70


def test_normalisation_constants_not_the_specs_are_caught(monkeypatch):
    """Constants for pixels up to 256 (not 255) are caught: the region is checked against the spec's
    preprocessing, (p/255 − mean)/std, computed apart from them."""
    wrong = image_input.normalisation
    monkeypatch.setattr(image_input, "normalisation", lambda mean, std, pixel_max, dtype: wrong(mean, std, 256.0))
    with pytest.raises(RewriteError, match="changed what layer 'input' computes"):
        run_rewrites(_graph(act="relu"), [("image_input", {"mean": MEAN, "std": STD})], target="onnx")


def test_a_wrong_rewrite_stops_the_compile_with_a_located_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(REWRITES, "hard_sigmoid", dataclasses.replace(hard_sigmoid.REWRITE, run=_wrong_hard_sigmoid))
    args = ["compile", str(SPECS / "v3_small.mnet"), "--alpha", "0.35", "--resolution", "32", "--target", "tflite"]
    assert main([*args, "-o", str(tmp_path)]) == 70
    err = capsys.readouterr().err
    assert "v3_small.mnet:" in err and "rewrite 'hard_sigmoid' for target 'tflite' changed what layer" in err
    assert not list(tmp_path.glob("*.tflite"))


def test_the_normalisation_constants_are_the_image_inputs():
    scale, shift = normalisation(MEAN, STD)
    np.testing.assert_allclose(scale * 255 * np.asarray(STD), 1, rtol=1e-7)
    np.testing.assert_allclose(-shift * np.asarray(STD), MEAN, rtol=1e-7)


# ---- the affine op on every target --------------------------------------------------------------


def _affine_graph() -> Graph:
    """input → affine per channel, fused relu6 → affine of one value: what the rewrites write."""
    g = Graph("affine")
    g.add("input", "input", attrs={"shape": [3, 4, 5]}, src=SRC)
    g.add("per_channel", "affine", ["input"], attrs={"fused_act": "relu6"}, src=SRC)
    g.add("one", "affine", ["per_channel"], attrs={"per_channel": False}, src=SRC)
    g.outputs = ["one"]
    infer_shapes(g)
    g.node("per_channel").params = {"scale": np.array([0.5, 2.0, -1.5], np.float32), "shift": np.array([1, -2, 3.0])}
    g.node("one").params = {"scale": np.array([1.0 / 6.0]), "shift": np.array([0.25])}
    g.validate(require_params=True)
    return g


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_lowers_affine_and_its_runtime_computes_it(tmp_path, name):
    target = TARGETS[name]
    g = _affine_graph()
    record = ArtifactRecord("0", "affine", "", "", 1.0, 4, 3, 0, ())
    fp32 = {"precision": "fp32"} if "precision" in target.choices else {}  # Core ML's default computes in fp16
    options = target.options(TargetOptions(**fp32), NetworkFacts(3, (0.5,) * 3, (0.25,) * 3))
    path = tmp_path / f"affine{target.suffix}"
    target.write(g, path, record, options)
    x = np.random.default_rng(3).normal(0, 4, (2, 3, 4, 5)).astype(np.float32)
    executor = target.executors()[0]
    (y,) = run_split(executor.run, path, {INPUT_NAME: x}, executor.split_samples)  # as verification runs it
    expected = run(g, {"input": x})["one"]
    np.testing.assert_allclose(np.reshape(y, expected.shape), expected, rtol=1e-5, atol=1e-5)


def test_tflite_refuses_a_per_channel_affine_on_int8_values_at_its_layer(tmp_path):
    target = TARGETS["tflite"]
    g = _affine_graph()
    for n in g:
        g.node(n).qparams = QParams(Affine(0.05, 128))
    record = ArtifactRecord("0", "affine", "", "", 1.0, 4, 3, 0, ())
    options = target.options(TargetOptions(), NetworkFacts(3, (0.5,) * 3, (0.25,) * 3))
    with pytest.raises(InputError, match="target='tflite' cannot express a per-channel affine map on int8 values") as e:
        target.write(g, tmp_path / "x.tflite", record, options)
    assert e.value.diagnostics[0].loc == SRC


def test_rewrites_are_registered_once_by_name():
    assert set(rewrites.REWRITES) == {"image_input", "hard_sigmoid"}
    assert all(r.name == name for name, r in rewrites.REWRITES.items())
