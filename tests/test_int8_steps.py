"""The int8 steps beyond rounding to nearest: bias correction (the mean shift int8 weight rounding
causes, taken off each layer's int32 bias) and equalisation (channels before a depthwise
convolution scaled by powers of two), each recorded with the artifact and rebuilt by `mnc verify`;
and the per-layer int8 error they are judged by."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import ROOT, SPECS

from mnc.backends import onnx as onnx_backend
from mnc.backends.onnx import run_onnx
from mnc.cli import main
from mnc.errors import Loc
from mnc.ir.graph import Graph
from mnc.ir.interpreter import Interpreter
from mnc.ir.shapes import infer_shapes
from mnc.pipeline import Quantization, compile_spec
from mnc.pipeline.quantize import quantize_with_ranges
from mnc.quant import equalization
from mnc.quant.bias_correction import bias_corrections
from mnc.quant.calibrate import activation_ranges
from mnc.quant.debug import layer_errors

DIGITS = ROOT / "tests" / "fixtures" / "digits"
WEIGHTS = DIGITS / "mobilenet_v2_digits.safetensors"
IN, OUT = 64, 4


def _one_conv(weight: np.ndarray, bias: np.ndarray) -> Graph:
    g = Graph("one_conv")
    src = Loc("t.mnet", 1, 1)
    g.add("input", "input", attrs={"shape": [IN, 4, 4]}, src=src)
    attrs = {"out_channels": OUT, "kernel": [1, 1], "stride": [1, 1], "pads": [0, 0, 0, 0], "groups": 1, "bias": True}
    g.add("conv", "conv", ["input"], src=src, attrs=attrs)
    g.outputs = ["conv"]
    infer_shapes(g)
    g.node("conv").params = {"weight": weight, "bias": bias}
    return g


def test_the_mean_shift_of_rounded_weights_is_taken_off_the_bias():
    rng = np.random.default_rng(0)
    step = 0.01  # each channel's weight scale: its largest weight is 127 steps
    # Every weight but the largest sits 0.45 of a step above the grid, so rounding lowers all of
    # them alike: on positive inputs the output's mean drops by about 0.45·step·63·E[x] ≈ 0.28.
    k = rng.integers(-100, 100, size=(OUT, IN)).astype(np.float64)
    weight = (k + 0.45) * step
    weight[:, 0] = 127 * step
    weight = weight.reshape(OUT, IN, 1, 1).astype(np.float32)
    graph = _one_conv(weight, np.zeros(OUT, np.float32))
    calib = rng.uniform(0.5, 1.5, size=(32, IN, 4, 4)).astype(np.float32)
    ranges = activation_ranges(graph, calib, "minmax")
    plain, _ = quantize_with_ranges(graph, ranges, 8)
    corrections = bias_corrections(plain, calib)
    corrected, _ = quantize_with_ranges(graph, ranges, 8, None, corrections)

    # The steps, from their definition, in numpy: the int8 input grid's values through the weights'
    # rounding error, averaged, in units of each channel's bias scale.
    q_in = plain.node("input").qparams.output
    x_grid = (np.clip(np.round(calib / q_in.scale) + q_in.zero_point, 0, 255) - q_in.zero_point) * q_in.scale
    w_q = plain.node("conv").qparams.weight.dequantized()[:, :, 0, 0]
    shift = np.einsum("oi,nihw->o", w_q - weight[:, :, 0, 0].astype(np.float64), x_grid) / (len(calib) * 16)
    expected = -shift / plain.node("conv").qparams.bias.scale
    assert np.abs(np.asarray(corrections["conv"]) - expected).max() <= 1

    # Run in ONNX Runtime on other data: the corrected int8 output's mean is fp32's, within half an
    # output step; the uncorrected one is several steps off.
    x = rng.uniform(0.5, 1.5, size=(64, IN, 4, 4)).astype(np.float32)
    fp32 = np.einsum("oi,nihw->no", weight[:, :, 0, 0].astype(np.float64), x.astype(np.float64)) / 16
    out_step = plain.node("conv").qparams.output.scale
    errors = {}
    for name, g in (("plain", plain), ("corrected", corrected)):
        (y,) = run_onnx(onnx_backend.emit(g, {}), {"input": x}, optimise=False)
        errors[name] = np.abs(y.astype(np.float64).mean(axis=(0, 2, 3)) - fp32.mean(axis=0)) / out_step
    assert errors["plain"].min() > 3, errors
    assert errors["corrected"].max() < 0.5, errors


def _compile(tmp_path, **quantization):
    return compile_spec(
        SPECS / "v2.mnet",
        alpha=0.35,
        resolution=32,
        weights=WEIGHTS,
        out_dir=tmp_path,
        quantization=Quantization(str(DIGITS / "calib"), samples=32, **quantization),
    )


def _int32_biases(artifact) -> dict[str, np.ndarray]:
    model = onnx.load(str(artifact))
    return {
        t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32
    }


def test_corrections_are_recorded_reported_and_rebuilt_by_verify(tmp_path, capsys):
    corrected = _compile(tmp_path / "on")
    plain = _compile(tmp_path / "off", bias_correction=False)
    record = corrected.report["quantization"]["bias_correction"]
    assert record["samples"] == 32 and record["layers"] == 53, record
    assert plain.report["quantization"]["bias_correction"] is None
    a, b = _int32_biases(corrected.artifact), _int32_biases(plain.artifact)
    assert a.keys() == b.keys() and any((a[k] != b[k]).any() for k in a)

    assert main(["verify", str(corrected.artifact), "--weights", str(WEIGHTS)]) == 0
    capsys.readouterr()
    # Without its recorded corrections the artifact's biases are not what its record rebuilds.
    stripped = _without_metadata(corrected.artifact, "mnc.bias_corrections", tmp_path / "stripped.onnx")
    assert main(["verify", str(stripped), "--weights", str(WEIGHTS)]) == 3
    assert "bias" in capsys.readouterr().err


def _without_metadata(artifact, key: str, out):
    model = onnx.load(str(artifact))
    kept = [p for p in model.metadata_props if p.key != key]
    assert len(kept) == len(model.metadata_props) - 1
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(out))
    return out


def test_the_command_line_can_leave_biases_as_rounded(tmp_path, capsys):
    args = ["compile", str(SPECS / "v2.mnet"), "--alpha", "0.35", "--resolution", "32", "--weights", str(WEIGHTS)]
    args += ["--target", "onnx", "--quantize", "int8", "--calib", str(DIGITS / "calib"), "--calib-samples", "16"]
    assert main([*args, "-o", str(tmp_path / "on")]) == 0
    assert "bias correction: 53 layers, measured on 16 calibration samples" in capsys.readouterr().out
    assert main([*args, "--no-bias-correction", "-o", str(tmp_path / "off")]) == 0
    assert "bias correction" not in capsys.readouterr().out


def test_layer_errors_measure_each_layer_against_fp32():
    """The debugger's figures for one convolution, recomputed in numpy: its SQNR against fp32 (alone
    and in the network: the same here, the input being the network's), and the share it clips."""
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(OUT, IN, 1, 1)).astype(np.float32) * 0.1
    graph = _one_conv(weight, np.zeros(OUT, np.float32))
    calib = rng.uniform(0.0, 1.0, size=(16, IN, 4, 4)).astype(np.float32)
    ranges = activation_ranges(graph, calib, "minmax")
    ranges["conv"] = [r * 0.5 for r in ranges["conv"]]  # half the range: the tails are clipped
    quantized, _ = quantize_with_ranges(graph, ranges, 8)
    x = rng.uniform(0.0, 1.0, size=(8, IN, 4, 4))

    (error,) = layer_errors(quantized, x)
    fp32 = np.einsum("oi,nihw->nohw", weight[:, :, 0, 0].astype(np.float64), x)
    q_in, q_out = quantized.node("input").qparams.output, quantized.node("conv").qparams.output
    x_grid = (np.clip(np.round(x / q_in.scale) + q_in.zero_point, 0, 255) - q_in.zero_point) * q_in.scale
    w_q = quantized.node("conv").qparams.weight.dequantized()[:, :, 0, 0]
    y = np.einsum("oi,nihw->nohw", w_q, x_grid) + quantized.node("conv").qparams.bias.dequantized()[None, :, None, None]
    y = (np.clip(np.round(y / q_out.scale) + q_out.zero_point, 0, 255) - q_out.zero_point) * q_out.scale
    expected = 10 * np.log10((fp32**2).sum() / ((fp32 - y) ** 2).sum())
    assert error.isolated_sqnr == pytest.approx(expected, abs=1e-9)
    assert error.propagated_sqnr == pytest.approx(expected, abs=1e-9)
    low, high = -q_out.zero_point * q_out.scale, (255 - q_out.zero_point) * q_out.scale
    outside = ((fp32 < low - q_out.scale / 2) | (fp32 > high + q_out.scale / 2)).mean()
    assert outside > 0.05 and error.clipped == pytest.approx(outside)
    assert (error.low, error.high) == pytest.approx((low, high))


def _conv_then_depthwise(first: np.ndarray, bias: np.ndarray, depthwise: np.ndarray, act: str) -> Graph:
    g = Graph("conv_dw")
    src = Loc("t.mnet", 1, 1)
    c = first.shape[0]
    g.add("input", "input", attrs={"shape": [first.shape[1], 6, 6]}, src=src)
    conv = {"kernel": [1, 1], "stride": [1, 1], "pads": [0, 0, 0, 0], "bias": True}
    g.add("expand", "conv", ["input"], src=src, attrs={**conv, "out_channels": c, "groups": 1, "fused_act": act})
    dw = {**conv, "kernel": [3, 3], "pads": [1, 1, 1, 1], "out_channels": c, "groups": c}
    g.add("dw", "conv", ["expand"], src=src, attrs=dw)
    g.outputs = ["dw"]
    infer_shapes(g)
    g.node("expand").params = {"weight": first, "bias": bias}
    g.node("dw").params = {"weight": depthwise, "bias": np.zeros(c, np.float32)}
    return g


@pytest.mark.parametrize("act", ["relu6", "relu"])
def test_equalisation_is_exact_in_float_and_evens_out_the_grid(act):
    rng = np.random.default_rng(2)
    # Eight channels whose ranges span 2^0 … 2^-10: on one uint8 grid the small ones get a few levels.
    spread = 2.0 ** -np.linspace(0, 10, 8)
    first = (np.abs(rng.normal(size=(8, 4, 1, 1))) * spread.reshape(-1, 1, 1, 1)).astype(np.float32)
    # The depthwise filters undo the spread, so its output's channels are alike: the grid before it is what differs.
    depthwise = (rng.normal(size=(8, 1, 3, 3)) / spread.reshape(-1, 1, 1, 1)).astype(np.float32)
    bias = (0.01 * spread).astype(np.float32)
    graph = _conv_then_depthwise(first, bias, depthwise, act)
    calib = rng.uniform(0, 1, size=(16, 4, 6, 6)).astype(np.float32)

    doublings = equalization.doublings(graph, calib)
    pre = np.einsum("oi,nihw->nohw", first[:, :, 0, 0].astype(np.float64), calib) + bias[None, :, None, None]
    maxima = np.maximum(pre, 0).max(axis=(0, 2, 3))
    expected = np.floor(np.log2(maxima.max() / maxima))
    assert doublings["expand"] == expected.tolist() and max(expected) >= 8
    equalized = equalization.equalized(graph, doublings)
    # Powers of two scale every product and sum exactly: the depthwise output is the same, bit for bit.
    before = Interpreter(graph, np.float32).run({"input": calib})["dw"]
    after = Interpreter(equalized, np.float32).run({"input": calib})["dw"]
    assert np.array_equal(before, after)

    ranges = activation_ranges(graph, calib, "minmax")
    ranges_eq = activation_ranges(equalized, calib, "minmax")
    plain, _ = quantize_with_ranges(graph, ranges, 8)
    evened, _ = quantize_with_ranges(graph, ranges_eq, 8, doublings=doublings)
    for layer in ("expand", "dw"):  # per-channel int8 weights do not change; their scales move by 2^k
        assert np.array_equal(plain.node(layer).qparams.weight.q, evened.node(layer).qparams.weight.q)
    x = rng.uniform(0, 1, size=(32, 4, 6, 6)).astype(np.float32)
    fp32 = Interpreter(graph).run({"input": x})["dw"]
    sqnr = {}
    for name, g in (("plain", plain), ("evened", evened)):
        (y,) = run_onnx(onnx_backend.emit(g, {}), {"input": x}, optimise=False)
        # Per channel, then the worst: the small channels are what one grid loses.
        noise = ((fp32 - y) ** 2).mean(axis=(0, 2, 3))
        sqnr[name] = (10 * np.log10((fp32**2).mean(axis=(0, 2, 3)) / noise)).min()
    assert sqnr["evened"] > sqnr["plain"] + 20, sqnr


def test_equalisation_is_recorded_and_rebuilt_by_verify(tmp_path, capsys):
    result = _compile(tmp_path)
    record = result.report["quantization"]["equalization"]
    assert record["samples"] == 32 and record["layers"] == 17 and record["channels"] > 0, record
    plain = _compile(tmp_path / "off", equalization=False)
    assert plain.report["quantization"]["equalization"] is None
    # Without its recorded doublings the artifact's weight scales are not what its record rebuilds.
    stripped = _without_metadata(result.artifact, "mnc.equalization", tmp_path / "stripped.onnx")
    assert main(["verify", str(stripped), "--weights", str(WEIGHTS)]) == 3
    assert "differs from the spec's weights" in capsys.readouterr().err


def test_the_report_and_verify_show_where_int8_loses(tmp_path, capsys):
    result = _compile(tmp_path)
    layers = result.report["quantization"]["layers"]
    quantised = [n for n in result.report["quantization"]["activation_ranges"] if n != "input"]
    assert layers["samples"] == 4 and [e["name"] for e in layers["of"]] == quantised
    assert all(e["isolated_sqnr"] is None or e["isolated_sqnr"] > 10 for e in layers["of"])

    artifact, calib = str(result.artifact), str(DIGITS / "calib")
    plot = tmp_path / "layers.png"
    common = ["verify", artifact, "--weights", str(WEIGHTS), "--layers", "--calib", calib, "--calib-samples", "8"]
    assert main([*common, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("  stage")]
    assert [r[0] for r in rows] == quantised
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*common, "--json"]) == 0
    printed = capsys.readouterr().out
    table = json.loads(printed[printed.index('{\n  "layers"') :])["layers"]
    # The first layer sees the network's input: alone and in the network it is the same computation.
    assert table[0]["isolated_sqnr"] == table[0]["propagated_sqnr"]
    assert [e["name"] for e in table] == quantised


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--layers"], "--layers needs calibration data"),
        (["--plot", "x.png"], "--plot is for --layers"),
        (["--calib", "x"], "--calib is for --layers"),
    ],
)
def test_layer_options_are_checked(tmp_path, capsys, extra, message):
    result = _compile(tmp_path)
    code = main(["verify", str(result.artifact), "--weights", str(WEIGHTS), *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_layers_are_for_int8_artifacts(tmp_path, capsys):
    f = compile_spec(SPECS / "v2.mnet", alpha=0.35, resolution=32, weights=WEIGHTS, out_dir=tmp_path)
    code = main(["verify", str(f.artifact), "--weights", str(WEIGHTS), "--layers", "--calib", str(DIGITS / "calib")])
    assert code == 2 and "--layers is for int8 artifacts" in capsys.readouterr().err
