"""int8 post-training quantisation: the scheme, calibration data, the QDQ artifact, and accuracy on a
network that was actually trained (tools/train_digits.py: scikit-learn's digits, held-out split)."""

import numpy as np
import onnx
import pytest
from conftest import ROOT, SPECS

from mnc.backends import onnx as onnx_backend
from mnc.backends.onnx import run_onnx
from mnc.cli import main
from mnc.frontend import load_spec
from mnc.pipeline import Quantization, compile_spec
from mnc.quant import scheme
from mnc.samples import normalise

DIGITS = ROOT / "tests" / "fixtures" / "digits"
WEIGHTS = DIGITS / "mobilenet_v2_digits.safetensors"


def _compile(tmp_path, quantization=None, **kwargs):
    return compile_spec(
        SPECS / "v2.mnet",
        alpha=0.35,
        resolution=32,
        weights=WEIGHTS,
        out_dir=tmp_path,
        quantization=quantization,
        **kwargs,
    )


@pytest.fixture(scope="module")
def heldout():
    data = np.load(DIGITS / "heldout.npz")
    settings = load_spec(SPECS / "v2.mnet").settings
    return normalise(settings, data["images"].astype(np.float32)), data["labels"]


@pytest.fixture(scope="module")
def int8_and_fp32(tmp_path_factory, heldout):
    out = tmp_path_factory.mktemp("int8")
    q = _compile(out / "q", Quantization(str(DIGITS / "calib"), samples=64))
    f = _compile(out / "f")
    return q, f


def test_int8_keeps_the_trained_networks_accuracy(int8_and_fp32, heldout):
    x, labels = heldout
    q, f = int8_and_fp32
    (yq,) = run_onnx(q.artifact, {"input": x})
    (yf,) = run_onnx(f.artifact, {"input": x})
    acc_q, acc_f = (yq.argmax(1) == labels).mean(), (yf.argmax(1) == labels).mean()
    assert acc_f > 0.95  # a trained network, not a random one
    assert acc_q >= acc_f - 0.01
    assert (yq.argmax(1) == yf.argmax(1)).mean() >= 0.98


def test_int8_artifact_is_qdq_with_8_bit_depthwise_and_7_bit_other_weights_and_int32_bias(int8_and_fp32):
    q, f = int8_and_fp32
    model = onnx.load(str(q.artifact))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    w = inits["stage2.block0.expand.weight_q"]
    assert w.dtype == np.int8 and np.abs(w).max() <= 63 and np.abs(w).max() >= 60  # 7-bit, range used
    dw = inits["stage2.block0.dw.weight_q"]
    assert dw.dtype == np.int8 and np.abs(dw).max() == 127  # depthwise: 8-bit
    assert inits["stage2.block0.expand.weight_scale"].shape == (w.shape[0],)
    assert inits["stage2.block0.expand.bias_q"].dtype == np.int32
    assert inits["stage2.block0.expand.out_zero_point"].dtype == np.uint8
    types = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= types
    meta = {p.key: p.value for p in model.metadata_props}
    assert "7-bit" in meta["mnc.quantization"] and meta["mnc.passes"].endswith("quantize_int8")
    assert meta["mnc.weight_bits"] == "7" and meta["mnc.depthwise_weight_bits"] == "8"
    v = q.typed.verification
    assert v.passed and v.check("saturation").section["largest_weight"] <= 63
    # ONNX Runtime's integer kernels, layer by layer, against the reference of each layer.
    layers = v.check("layers")
    assert layers.passed and layers.section["max_lsb"] <= 1 and layers.section["layers"] > 50


def test_verify_rebuilds_the_quantised_reference(int8_and_fp32, capsys):
    q, _ = int8_and_fp32
    assert main(["verify", str(q.artifact), "--weights", str(WEIGHTS)]) == 0
    assert "int8 against mnc's fake-quant reference" in capsys.readouterr().out


def test_same_data_and_seed_give_the_same_ranges_and_bytes(tmp_path):
    a = _compile(tmp_path / "a", Quantization(str(DIGITS / "calib"), samples=16, method="percentile"))
    b = _compile(tmp_path / "b", Quantization(str(DIGITS / "calib"), samples=16, method="percentile"))
    assert a.typed.quantization.activation_ranges == b.typed.quantization.activation_ranges
    assert a.artifact.read_bytes() == b.artifact.read_bytes()


def _has_vnni() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


@pytest.mark.skipif(_has_vnni(), reason="8-bit weights saturate only on x86 hosts without VNNI")
def test_8_bit_weights_really_saturate_on_this_host():
    """The reason for the bound: with 8-bit weights, integer kernels and float QDQ part ways; the
    depthwise kernel, which accumulates in int32, does not saturate with 8 bits."""
    import onnxruntime as ort

    from mnc.backends.target import Int8Plan
    from mnc.passes.manager import resolve_pipeline, run_pipeline
    from mnc.pipeline import build, quantize

    built = build(SPECS / "v2.mnet", alpha=0.35, resolution=32, weights=WEIGHTS)
    optimised, _ = run_pipeline(built.graph, resolve_pipeline("default"))
    x = np.load(DIGITS / "heldout.npz")["images"][:32].astype(np.float32)
    x = normalise(built.spec.settings, x)
    off = {}
    plans = {"8": Int8Plan(8, True, ""), "7": Int8Plan(7, True, ""), "7, depthwise 8": Int8Plan(7, True, "", 8)}
    for bits, plan in plans.items():
        quantized = quantize(optimised, built, Quantization(str(DIGITS / "calib"), samples=64), plan).graph
        model = onnx_backend.emit(quantized, {})
        runs = []
        for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
            options = ort.SessionOptions()
            options.graph_optimization_level = level
            runs.append(
                ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            )
        lsb = quantized.node(quantized.outputs[0]).qparams.output.scale
        off[bits] = float((np.round(np.abs(runs[0] - runs[1]) / lsb) > 1).mean())
    assert off["8"] > 0.3 and off["7"] < 0.02 and off["7, depthwise 8"] < 0.02, off


def test_full_8_bit_weights_are_refused_as_a_saturation_risk(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(onnx_backend, "WEIGHT_BITS", 8)
    code = main(
        [
            "compile",
            str(SPECS / "v2.mnet"),
            "--alpha",
            "0.35",
            "--resolution",
            "32",
            "--weights",
            str(WEIGHTS),
            "--quantize",
            "int8",
            "--calib",
            str(DIGITS / "calib"),
            "--target",
            "onnx",
            "-o",
            str(tmp_path),
        ]
    )
    assert code == 3 and "can saturate ONNX Runtime's u8×s8 kernels" in capsys.readouterr().err
    assert not any(tmp_path.glob("*.onnx"))


def test_synthetic_calibration_is_explicit_and_warned_about(tmp_path, capsys):
    code = main(
        [
            "compile",
            str(SPECS / "v2.mnet"),
            "--alpha",
            "0.35",
            "--resolution",
            "32",
            "--weights",
            str(WEIGHTS),
            "--quantize",
            "int8",
            "--calib",
            "synthetic",
            "--calib-samples",
            "8",
            "--target",
            "onnx",
            "-o",
            str(tmp_path),
        ]
    )
    assert code == 0 and "warning: calibrated with synthetic data" in capsys.readouterr().err


def _cli(tmp_path, *extra):
    target = [] if "--target" in extra else ["--target", "onnx"]
    return main(
        [
            "compile",
            str(SPECS / "v2.mnet"),
            "--alpha",
            "0.35",
            "--resolution",
            "32",
            "--weights",
            str(WEIGHTS),
            *target,
            "-o",
            str(tmp_path / "out"),
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.mkdir(), "no images"),
        (lambda p: (p.mkdir(), (p / "a.png").write_bytes(b"not a png")), "cannot read image"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((4, 3, 16, 16), np.float32)), "expected N×3×32×32 floats"),
        (lambda p: np.save(p.with_suffix(".npy"), np.full((4, 3, 32, 32), np.nan, np.float32)), "NaN"),
        (
            lambda p: np.savez(
                p.with_suffix(".npz"), a=np.zeros((1, 3, 32, 32), np.float32), b=np.zeros((1, 3, 32, 32), np.float32)
            ),
            "name the inputs array 'inputs'",
        ),
        (lambda p: p.with_suffix(".txt").write_text("x"), "must be a folder of images, a .npy or .npz array"),
    ],
)
def test_bad_calibration_data_exits_2(tmp_path, capsys, make, message):
    base = tmp_path / "calib"
    make(base)
    target = next(p for p in tmp_path.iterdir() if p.name.startswith("calib"))
    assert _cli(tmp_path, "--quantize", "int8", "--calib", str(target)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--quantize", "int8"], "--quantize int8 needs calibration data"),
        (["--calib", "synthetic"], "--calib is for --quantize int8"),
        (["--quantize", "int8", "--calib", "/nonexistent/dir"], "does not exist"),
        (
            ["--quantize", "int8", "--calib", "synthetic", "--calib-samples", "0"],
            "--calib-samples 0: need at least one sample",
        ),
    ],
)
def test_quantisation_arguments_exit_2(tmp_path, capsys, extra, message):
    assert _cli(tmp_path, *extra) == 2
    assert message in capsys.readouterr().err


# ---- the scheme's arithmetic --------------------------------------------------------------------


def test_activation_parameters_contain_zero_with_an_integer_zero_point():
    p = scheme.activation_params(0.5, 6.0)  # a ReLU6 output never below 0.5: the range still holds 0
    assert p.zero_point == 0 and p.scale == pytest.approx(6.0 / 255)
    p = scheme.activation_params(-1.0, 3.0)
    assert isinstance(p.zero_point, int) and p.zero_point == round(1.0 / (4.0 / 255))
    assert scheme.fake_quantize(np.array([0.0]), p)[0] == 0.0  # zero is exact
    assert scheme.activation_params(0.0, 0.0) == scheme.Affine(1.0, 0)


def test_weights_per_channel_symmetric_and_zero_channels_safe():
    w = np.stack([np.linspace(-2, 1, 9), np.zeros(9), np.linspace(0, 0.5, 9)]).reshape(3, 1, 3, 3)
    q, scale = scheme.weight_params(w, bits=7)
    assert q.dtype == np.int8 and q.min() >= -63 and q.max() <= 63
    assert scale[0] == pytest.approx(2 / 63) and scale[1] == 1.0 and np.all(q[1] == 0)
    np.testing.assert_allclose(q * scale.reshape(-1, 1, 1, 1), w, atol=scale.max() / 2)


def test_bias_overflow_is_resolved_not_clipped():
    weight = np.full((2, 4, 1, 1), 0.01)
    q_w, w_scale = scheme.weight_params(weight, bits=8)
    bias = np.array([1e6, 1e-3])  # at input scale 1e-6 only the first needs more than int32
    bias_q, bias_scale, regrown, new_scale, grown = scheme.bias_params(bias, 1e-6, w_scale, weight, bits=8)
    assert grown == [0] and new_scale[0] > w_scale[0] and new_scale[1] == w_scale[1]
    np.testing.assert_allclose(bias_q * bias_scale, bias, rtol=1e-6)  # represented, not clipped
    assert np.all(np.abs(bias_q.astype(np.int64)) <= scheme.INT32_MAX) and regrown is not None


# ---- Core ML ----------------------------------------------------------------------------------


@pytest.mark.parametrize("deployment", ["iOS16", "iOS17"])
def test_core_ml_int8_keeps_the_trained_networks_accuracy(tmp_path, heldout, deployment):
    from mnc.backends.coreml import run_simulated as run_coreml_simulated
    from mnc.backends.coreml_exec import CoreMLProgram
    from mnc.pipeline import TargetOptions

    x, labels = heldout
    q = _compile(
        tmp_path,
        Quantization(str(DIGITS / "calib"), samples=64),
        target="coreml",
        options=TargetOptions(deployment_target=deployment),
    )
    f = _compile(tmp_path / "f")
    (yq,) = run_coreml_simulated(q.artifact, {"input": x})
    (yf,) = run_onnx(f.artifact, {"input": x})
    assert (yq.argmax(1) == labels).mean() >= (yf.argmax(1) == labels).mean() - 0.01
    assert (yq.argmax(1) == yf.argmax(1)).mean() >= 0.98
    types = {op.type for op in CoreMLProgram(q.artifact).operations}
    assert "constexpr_affine_dequantize" in types
    assert ("quantize" in types) == (deployment == "iOS17")  # int8 activations from iOS17
    # Equalisation is exact only where a uint8 grid saturates: weight-only int8 keeps the network's channels.
    assert (q.report["quantization"]["equalization"] is None) == (deployment == "iOS16")
    assert q.typed.verification.passed
    assert main(["verify", str(q.artifact), "--weights", str(WEIGHTS)]) == 0


def test_core_ml_int8_needs_ios16(tmp_path, capsys):
    assert (
        _cli(
            tmp_path, "--quantize", "int8", "--calib", "synthetic", "--target", "coreml", "--deployment-target", "iOS15"
        )
        == 2
    )
    assert "needs --deployment-target iOS16/macOS13 or later" in capsys.readouterr().err


@pytest.mark.parametrize("target,extra", [("onnx", {}), ("ort", {}), ("coreml", {"deployment_target": "iOS17"})])
def test_a_layer_that_computes_otherwise_fails_the_layer_check(tmp_path, heldout, target, extra):
    """The layer-by-layer check can fail: the artifact is checked against an IR in which one layer's
    weights moved by three steps in one channel, as a wrong weight, scale or kernel would show."""
    from mnc.artifact import ArtifactRecord
    from mnc.backends import TARGETS
    from mnc.passes.manager import run_pipeline
    from mnc.pipeline import TargetOptions, build
    from mnc.pipeline.compile import pass_options
    from mnc.pipeline.quantize import PASS, quantize_as_recorded

    backend = TARGETS[target]
    given = TargetOptions(**extra)
    report = _compile(tmp_path, Quantization(str(DIGITS / "calib"), samples=32), target=target, options=given)
    record = ArtifactRecord.from_metadata(backend.read_metadata(report.artifact), str(report.artifact))
    built = build(SPECS / "v2.mnet", alpha=0.35, resolution=32, weights=WEIGHTS)
    passes = [p for p in record.passes if p != PASS]
    optimised, _ = run_pipeline(built.graph, passes, options=pass_options(backend, passes))
    quantized = quantize_as_recorded(optimised, record)
    feed = heldout[0][:4]
    (output,) = backend.executors()[0].run(report.artifact, {"input": feed})
    (layers,) = [c for c in backend.int8_checks(report.artifact, quantized, feed, output) if c.name == "layers"]
    assert layers.passed, layers.section
    moved = quantized.node("stage3.block0.expand").qparams.weight
    moved.q[0] = np.clip(moved.q[0].astype(np.int32) + 3, -63, 63).astype(np.int8)
    (layers,) = [c for c in backend.int8_checks(report.artifact, quantized, feed, output) if c.name == "layers"]
    assert not layers.passed
    if target != "ort":  # the .ort check rebuilds its instrumented twin from the IR, whose output then differs
        assert layers.section["worst_layer"] == "stage3.block0.expand", layers.section


@pytest.mark.parametrize("method", ["mse", "entropy", "percentile"])
def test_calibration_methods_clip_outliers_and_keep_few_distinct_values(method):
    from mnc.quant.calibrate import RANGE_OF

    rng = np.random.default_rng(0)
    values = np.abs(rng.laplace(size=200_000))  # a long tail, never negative
    low, high = RANGE_OF[method](values)
    assert 0 <= low < 1e-3 and 3 < high < 0.9 * values.max()  # the tail is clipped, the bulk kept
    few = np.array([0.0, 1.0, 2.0, 3.0] * 1000)  # every value fits 8 bits: nothing to clip
    if method != "percentile":
        assert RANGE_OF[method](few) == (0.0, 3.0)
