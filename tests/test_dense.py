"""Detection and segmentation as text: taps, branches, concat, bilinear upsampling, dilation, parts
and several outputs; torchvision's SSDLite, LR-ASPP and DeepLabV3 computed from the bundled specs.

Fixtures: tools/make_dense_fixtures.py (torchvision 0.29.1, seeded weights with batch-norm
statistics from data); the outputs and parameter counts in them are torchvision's."""

import json
import textwrap

import numpy as np
import pytest
from conftest import ROOT

from mnc.backends import TARGETS
from mnc.backends.target import TargetOptions
from mnc.cli import main
from mnc.errors import InputError, MncError
from mnc.frontend import build_graph, load_spec, load_spec_text
from mnc.frontend.anchors import default_boxes
from mnc.ir import kernels
from mnc.ir.cost import graph_cost
from mnc.pipeline import compile_spec

FIXTURES = ROOT / "tests" / "fixtures" / "torchvision_dense"
EXAMPLES = ROOT / "examples" / "specs"
MODELS = {  # spec → (fixture resolution, classes in the fixture, outputs)
    "ssdlite320_mobilenet_v3_large": (320, 7, ("bbox_regression", "cls_logits")),
    "lraspp_mobilenet_v3_large": (72, 3, ("out",)),
    "deeplabv3_mobilenet_v3_large": (72, 3, ("out",)),
}


def _fixture(name: str):
    resolution, classes, outputs = MODELS[name]
    return np.load(FIXTURES / f"{name}_r{resolution}.npz"), resolution, classes, outputs


@pytest.mark.parametrize("target", ["onnx", "coreml", "ncnn"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_bundled_spec_computes_what_torchvision_computed(tmp_path, name, target):
    data, resolution, classes, outputs = _fixture(name)
    result = compile_spec(
        EXAMPLES / f"{name}.mnet",
        target=target,
        resolution=resolution,
        weights=FIXTURES / f"{name}.npz",
        options=TargetOptions(precision="fp32") if target == "coreml" else None,
        out_dir=tmp_path,
    )
    assert result.report["weights"]["layout"] == "torchvision_" + name.split("_")[0].removesuffix("320")
    assert [o["name"] for o in result.report["artifact"]["outputs"]] == list(outputs)
    actual = TARGETS[target].executors()[0].run(result.artifact, {"input": data["input"]})
    for output, got in zip(outputs, actual, strict=True):
        expected = data[output]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), output
    assert result.report["classes"] == classes  # --classes from the checkpoint's classifier


def test_core_ml_fp16_of_a_detection_network_verifies_layer_by_layer(tmp_path):
    result = compile_spec(
        EXAMPLES / "ssdlite320_mobilenet_v3_large.mnet",
        target="coreml",
        weights=FIXTURES / "ssdlite320_mobilenet_v3_large.npz",
        options=TargetOptions(precision="fp16"),
        out_dir=tmp_path,
    )
    layers = result.typed.verification.check("layers")
    emitted_layers = result.typed.passes[-1]["nodes_after"] - 1  # every node of the artifact's IR but its input
    assert layers.passed and layers.section["layers"] == emitted_layers


@pytest.mark.parametrize("target", ["onnx", "ort", "coreml"])
def test_int8_of_a_network_with_two_outputs_is_verified_layer_by_layer(tmp_path, target):
    from mnc.pipeline.quantize import Quantization

    spec = tmp_path / "two.mnet"
    spec.write_text(HEADER + "outputs = out, high\n" + BODY)
    result = compile_spec(
        spec,
        target=target,
        options=TargetOptions(deployment_target="iOS17") if target == "coreml" else None,
        quantization=Quantization("synthetic", samples=8),
        out_dir=tmp_path / "out",
    )
    layers = result.report["verification"]["layers"]
    assert layers["verdict"] == "pass" and layers["max_lsb"] <= 1
    assert [o["name"] for o in result.report["artifact"]["outputs"]] == ["out", "high"]


def test_the_anchors_beside_an_ssdlite_artifact_are_torchvisions_default_boxes(tmp_path):
    data, resolution, _, _ = _fixture("ssdlite320_mobilenet_v3_large")
    spec = load_spec(EXAMPLES / "ssdlite320_mobilenet_v3_large.mnet")
    graph = build_graph(spec, spec.config(resolution=resolution, classes=7))
    boxes = default_boxes(graph, spec.settings.anchors)
    np.testing.assert_allclose(boxes, data["anchors_cxcywh"], atol=1e-7)
    # The file an app reads, written with the artifact.
    result = compile_spec(EXAMPLES / "ssdlite320_mobilenet_v3_large.mnet", target="onnx", classes=3, out_dir=tmp_path)
    written = json.loads(open(result.report["artifact"]["anchors"]).read())
    assert written["count"] == len(boxes) == result.report["artifact"]["outputs"][0]["shape"][1]
    np.testing.assert_allclose(np.asarray(written["boxes"]), boxes, atol=1e-7)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_counts_equal_torchvisions(name):
    counts = json.loads((FIXTURES / "counts.json").read_text())[name]
    spec = load_spec(EXAMPLES / f"{name}.mnet")
    graph = build_graph(spec, spec.config(classes=counts["kwargs"]["num_classes"]))
    assert graph_cost(graph).params == counts["total"]


def test_summary_shows_every_output_and_what_each_part_adds(capsys):
    assert main(["summary", str(EXAMPLES / "ssdlite320_mobilenet_v3_large.mnet"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    counts = json.loads((FIXTURES / "counts.json").read_text())["ssdlite320_mobilenet_v3_large"]
    parts = {p["name"]: p["params"] for p in summary["parts"]}
    assert parts == {
        "backbone": counts["backbone.features"],
        "extras": counts["backbone.extra"],
        "head": counts["head"],
    }
    assert [(o["name"], o["shape"]) for o in summary["outputs"]] == [
        ("bbox_regression", [3234, 4]),
        ("cls_logits", [3234, 91]),
    ]
    assert main(["summary", str(EXAMPLES / "lraspp_mobilenet_v3_large.mnet")]) == 0
    text = capsys.readouterr().out
    assert "output out: 520×520×21 per sample" in text and "part head:" in text


# ---- the kernels, against independent arithmetic ------------------------------------------------


def test_a_dilated_convolution_is_the_convolution_with_the_zero_spread_kernel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 13, 11))
    for groups, w in ((1, rng.standard_normal((3, 4, 3, 3))), (4, rng.standard_normal((4, 1, 3, 3)))):
        for d in (2, 5):
            spread = np.zeros((*w.shape[:2], 2 * d + 1, 2 * d + 1))
            spread[:, :, ::d, ::d] = w
            pads = (d, d, d, d)
            expected = kernels.conv2d(x, spread, None, (1, 1), pads, groups)
            np.testing.assert_allclose(kernels.conv2d(x, w, None, (1, 1), pads, groups, (d, d)), expected, atol=1e-12)


def test_bilinear_upsampling_has_half_pixel_centres():
    # align_corners=False: output pixel i samples the input at (i + 0.5)·in/out − 0.5, clamped.
    x = np.array([0.0, 1.0]).reshape(1, 1, 1, 2)
    np.testing.assert_allclose(kernels.resize_bilinear(x, (1, 4))[0, 0, 0], [0.0, 0.25, 0.75, 1.0])
    y = np.arange(3.0).reshape(1, 1, 3, 1)
    np.testing.assert_allclose(kernels.resize_bilinear(y, (2, 1))[0, 0, :, 0], [0.25, 1.75])


def test_per_anchor_rows_are_ordered_by_position_then_anchor():
    x = np.arange(2 * 3 * 2 * 2).reshape(1, 6, 2, 2)  # A = 3 anchors × K = 2 values
    rows = kernels.per_anchor(x, 2)[0]
    assert rows.shape == (12, 2)
    np.testing.assert_array_equal(rows[1], [x[0, 2, 0, 0], x[0, 3, 0, 0]])  # position (0, 0), anchor 1
    np.testing.assert_array_equal(rows[3], [x[0, 0, 0, 1], x[0, 1, 0, 1]])  # position (0, 1), anchor 0


# ---- the language's errors -----------------------------------------------------------------------

HEADER = textwrap.dedent("""\
    name = branches
    input_channels = 3
    base_resolution = 32
    classes = 4
    activation = relu
    width_rounding = make_divisible(divisor=8)
    padding = symmetric
    """)

BODY = textwrap.dedent("""\
    | operator   | c  | s | tap  |
    |------------|----|---|------|
    | conv2d 3x3 | 16 | 2 | low  |
    | conv2d 3x3 | 32 | 2 | high |

    part head
    batchnorm_eps = 0.001

    | from      | operator   | to  | c  | tap |
    |-----------|------------|-----|----|-----|
    | high      | upsample   | low |    | up  |
    | low, up   | concat     |     |    | cat |
    |           | conv2d 1x1 |     | k  | out |
    """)


def test_a_branching_spec_builds_and_each_part_keeps_its_settings():
    spec = load_spec_text(HEADER + "outputs = out, high\n" + BODY)
    graph = build_graph(spec, spec.config())
    assert [graph.node(o).shape for o in graph.outputs] == [(4, 16, 16), (32, 8, 8)]
    assert graph.node("stage3.block0.concat").shape == (48, 16, 16)
    eps = {n: graph.node(n).attrs["eps"] for n in graph if graph.node(n).op == "batchnorm"}
    assert eps == {"stage0.block0.conv.bn": 1e-5, "stage1.block0.conv.bn": 1e-5, "stage4.block0.conv.bn": 0.001}


@pytest.mark.parametrize(
    "old,new,message",
    [
        (
            "| high      | upsample",
            "| hihg      | upsample",
            "no tap named 'hihg' above this row; did you mean 'high'?",
        ),
        ("| low, up   | concat ", "| low, cat  | concat ", "(it is defined below; rows run in order)"),
        ("|     | k  | out |", "|     | k  | low |", "tap 'low' is defined twice"),
        (
            "| low, up   | concat     |     |    |",
            "| low, up   | conv2d 1x1 |     | 8  |",
            "'conv2d' reads one input, but the 'from' cell names 2",
        ),
        ("batchnorm_eps = 0.001", "classes = 7", "'classes' is a setting of the whole network"),
        ("| low |    | up  |", "| low |    | image |", "'image' is a reserved name"),
    ],
)
def test_errors_of_taps_and_parts_are_located(old, new, message):
    text = HEADER + "outputs = out\n" + BODY
    assert old in text
    diagnostics = [d for d in _errors(text.replace(old, new)) if d.loc]
    assert any(message in d.message for d in diagnostics), [d.message for d in diagnostics]
    assert all(d.loc.line > 1 for d in diagnostics)


def test_an_output_that_is_not_a_tap_is_located():
    (d,) = _errors(HEADER + "outputs = out, logits\n" + BODY)
    assert "output 'logits' is not a tap" in d.message and d.loc.line == 8


def test_a_concat_of_mismatched_sizes_is_located_at_its_row():
    text = (
        HEADER
        + "outputs = out\n"
        + BODY.replace("| high      | upsample   | low |    |", "| high      | conv2d 1x1 |     | 8  |")
    )
    spec = load_spec_text(text, "b.mnet")
    with pytest.raises(InputError) as info:
        build_graph(spec, spec.config())
    (d,) = info.value.diagnostics
    assert "cannot concatenate tensors whose shapes differ beyond the first axis: 16×16×16, 8×8×8" in d.message
    assert (d.loc.line, d.loc.col) == (20, 15)  # the concat row's operator cell


def test_an_upsample_to_an_impossible_size_is_located(tmp_path, capsys):
    text = (
        textwrap.dedent("""\
        block shrink()
            up = upsample(scale=0.01)
        end
        """)
        + HEADER
        + BODY.replace("| high      | upsample   | low |", "| high      | shrink     |     |")
    )
    spec = tmp_path / "s.mnet"
    spec.write_text(text)
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:2:10: error: upsample(scale=0.01) of a 8×8 map leaves nothing" in err and "^" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_anchors_that_do_not_fit_the_predictions_are_located(tmp_path):
    text = (EXAMPLES / "ssdlite320_mobilenet_v3_large.mnet").read_text().replace("ratios(2, 3)", "ratios(2)")
    spec = tmp_path / "ssd.mnet"
    spec.write_text(text)
    with pytest.raises(InputError) as info:
        compile_spec(spec, target="onnx", out_dir=tmp_path / "out")
    (d,) = info.value.diagnostics
    assert "predicts 6 boxes per location, but ssd() with 1 aspect ratios makes 4" in d.message
    lines = text.splitlines()
    assert lines[d.loc.line - 1].startswith("anchors")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _errors(text: str) -> list:
    with pytest.raises(MncError) as info:
        load_spec_text(text, "b.mnet")
    return info.value.diagnostics


def test_int8_of_a_segmentation_network_is_verified_layer_by_layer_in_onnx_runtime(tmp_path):
    from mnc.pipeline.quantize import Quantization

    result = compile_spec(
        EXAMPLES / "lraspp_mobilenet_v3_large.mnet",
        target="onnx",
        resolution=72,
        weights=FIXTURES / "lraspp_mobilenet_v3_large.npz",
        quantization=Quantization(ROOT / "tests" / "fixtures" / "photos" / "calib"),
        out_dir=tmp_path,
    )
    layers = result.report["verification"]["layers"]
    assert layers["verdict"] == "pass" and layers["max_lsb"] <= 1 and layers["layers"] > 90
    assert result.report["verification"]["verdict"] == "pass"


def test_labels_on_a_network_that_is_not_a_classifier_is_refused(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    spec = EXAMPLES / "lraspp_mobilenet_v3_large.mnet"
    argv = ["compile", str(spec), "--classes", "3", "--resolution", "72", "--target", "coreml"]
    assert main([*argv, "--labels", str(labels), "-o", str(tmp_path / "out")]) == 2
    assert (
        "--labels makes a classifier, whose output is one vector of class scores; this network's output is out 3×72×72"
        in (capsys.readouterr().err)
    )
    assert not (tmp_path / "out").exists()


# Every construct the dense-prediction specs add, in one small network with two outputs.
EVERY_CONSTRUCT = textwrap.dedent("""\
    name = every_construct
    input_channels = 3
    base_resolution = 32
    classes = 5
    activation = relu
    width_rounding = make_divisible(divisor=8)
    padding = symmetric
    outputs = rows, mask

    block head(low: tap, c: channels)
        atrous = conv(3, 16, dilation=2)
        pooled = pool(k=2, stride=2, from=input)
        gate   = conv(1, 16, bn=no, bias=no, act=sigmoid)
        wide   = upsample(scale=2)
        gated  = mul(atrous)
        up     = upsample(to=low)
        joined = concat(up, low)
        mask   = conv(1, c, bn=no, act=none)
    end

    block rows(values: int)
        predict = conv(1, 3 * values, bn=no, act=none)
        rows    = per_anchor(values)
    end

    | operator   | c  | s | d | tap  |
    |------------|----|---|---|------|
    | conv2d 3x3 | 16 | 2 |   | low  |
    | conv2d 3x3 | 16 | 2 | 2 | high |

    part head
    batchnorm_eps = 0.001

    | from | operator | low | c | values | tap  |
    |------|----------|-----|---|--------|------|
    | high | head     | low | k |        | mask |
    | high | rows     |     |   | k      | rows |
    """)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_construct_compiles_and_verifies_on_every_target(tmp_path, target):
    spec = tmp_path / "every.mnet"
    spec.write_text(EVERY_CONSTRUCT)
    graph = build_graph(load_spec(spec), load_spec(spec).config())
    assert {"resize", "concat", "per_anchor", "avgpool", "mul"} <= {graph.node(n).op for n in graph}
    assert any(graph.node(n).attrs.get("dilation") == [2, 2] for n in graph)
    result = compile_spec(spec, target=target, out_dir=tmp_path / "out")
    assert result.report["verification"]["verdict"] == "pass"
    assert [(o["name"], len(o["shape"])) for o in result.report["artifact"]["outputs"]] == [("rows", 3), ("mask", 4)]


HEAD_BLOCK = textwrap.dedent("""\
    block head(low: tap, c: channels)
        a   = conv(1, c, act=relu)
        z   = conv(1, c)                                if c > 1000
        up  = upsample(to=low)
        out = conv(1, c, bn=no, act=none)
    end
    """)
HEAD_BODY = textwrap.dedent("""\
    | operator   | c  | s | tap  |
    |------------|----|---|------|
    | conv2d 3x3 | 16 | 2 | low  |
    | conv2d 3x3 | 32 | 2 | high |
    | from | operator | low | c | tap |
    |------|----------|-----|---|-----|
    | high | head     | low | k | out |
    """)


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("a   = conv(1, c, act=relu)", "a   = conv(1, low, act=relu)", "unknown name 'low'"),
        ("up  = upsample(to=low)", "up  = upsample(to=z)", "layer 'z' is not built in this use of the block"),
        ("up  = upsample(to=low)", "up  = concat(a, a)", "reads the same tensor twice"),
        ("a   = conv(1, c, act=relu)", "low = conv(1, c, act=relu)", "layer 'low' has the name of a tap parameter"),
        ("| high | head     | low | k | out |", "| high | head     | low | k |     |", "feeds none of the network's"),
    ],
)
def test_errors_inside_blocks_that_read_taps_are_located(tmp_path, capsys, old, new, message):
    text = HEAD_BLOCK + HEADER + "outputs = out, high\n" + HEAD_BODY
    assert old in text
    spec = tmp_path / "h.mnet"
    spec.write_text(
        text.replace(old, new) if "| high | head" not in old else text.replace(old, new).replace("out, high", "high")
    )
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{spec}:" in err and "^" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_row_with_an_error_does_not_make_the_rows_reading_its_tap_fail_too():
    text = HEADER + "outputs = out\n" + BODY.replace("| conv2d 3x3 | 32 | 2 | high |", "| conv2d 3x3 | 32 | 0 | high |")
    diagnostics = _errors(text)
    assert len(diagnostics) == 1 and "column 's'" in diagnostics[0].message


def test_saved_weights_of_a_segmentation_network_reload_with_their_class_count(tmp_path):
    # No fully connected classifier to read the class count from: it is solved from the shapes that depend on it.
    saved = tmp_path / "lraspp.safetensors"
    first = compile_spec(
        EXAMPLES / "lraspp_mobilenet_v3_large.mnet",
        target="onnx",
        resolution=72,
        weights=FIXTURES / "lraspp_mobilenet_v3_large.npz",
        save_weights=saved,
        out_dir=tmp_path / "a",
    )
    again = compile_spec(
        EXAMPLES / "lraspp_mobilenet_v3_large.mnet", target="onnx", resolution=72, weights=saved, out_dir=tmp_path / "b"
    )
    assert first.report["classes"] == again.report["classes"] == 3
    x = _fixture("lraspp_mobilenet_v3_large")[0]["input"]
    (a,), (b,) = (TARGETS["onnx"].executors()[0].run(r.artifact, {"input": x}) for r in (first, again))
    np.testing.assert_array_equal(a, b)


ANCHORED = HEADER + "outputs = out\n" + BODY


@pytest.mark.parametrize(
    "old,new,message",
    [
        (
            "part head\n",
            "part head\nactivaton = relu\n",
            "'activaton' is an unknown setting; did you mean 'activation'?",
        ),
        ("part head\n", "part extra\nbatchnorm_eps = 0.1\npart head\n", "part 'extra' has settings but no rows"),
        ("part head\n", "part head\n" + BODY.split("part head")[1] + "part head\n", "part 'head' is declared twice"),
        ("outputs = out\n", "outputs = out, out\n", "'out' is named twice"),
        (
            "outputs = out\n",
            "outputs = out\nanchors = ssd(output=out)\n",
            "ssd() needs min_ratio, max_ratio, aspect_ratios",
        ),
        (
            "outputs = out\n",
            "outputs = out\nanchors = ssd(output=out, output=out, min_ratio=0.2, max_ratio=0.9, aspect_ratios=ratios(2))\n",
            "ssd() argument 'output' is given twice",
        ),
        (
            "outputs = out\n",
            "outputs = out\nanchors = ssd(output=out, min_ratio=0.9, max_ratio=0.2, aspect_ratios=ratios(2))\n",
            "need 0 < min_ratio < max_ratio ≤ 1",
        ),
    ],
)
def test_errors_of_parts_outputs_and_anchors_settings_are_located(tmp_path, capsys, old, new, message):
    assert old in ANCHORED
    spec = tmp_path / "s.mnet"
    spec.write_text(ANCHORED.replace(old, new, 1))
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and f"{spec}:" in err and "^" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
