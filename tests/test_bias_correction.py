"""Bias correction: the mean shift int8 weight rounding causes, taken off each layer's int32 bias,
recorded with the artifact and rebuilt by `mnc verify`; and the per-layer int8 error it is judged by."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ROOT, SPECS

from mnc.backends import onnx as onnx_backend
from mnc.backends.onnx import run_onnx
from mnc.cli import main
from mnc.errors import Loc
from mnc.ir.graph import Graph
from mnc.ir.shapes import infer_shapes
from mnc.pipeline import Quantization, compile_spec
from mnc.pipeline.quantize import quantize_with_ranges
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
    model = onnx.load(str(corrected.artifact))
    kept = [p for p in model.metadata_props if p.key != "mnc.bias_corrections"]
    assert len(kept) == len(model.metadata_props) - 1
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    stripped = tmp_path / "stripped.onnx"
    onnx.save(model, str(stripped))
    assert main(["verify", str(stripped), "--weights", str(WEIGHTS)]) == 3
    assert "bias" in capsys.readouterr().err


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
