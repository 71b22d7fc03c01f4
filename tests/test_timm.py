"""timm state dicts in: the `timm` layout (its module names give the order of computation), timm's
conventions, and `mnc import`, against the outputs timm computed (tests/fixtures/timm, written by
tools/make_timm_fixtures.py with torch 2.14.1 and timm 1.0.31)."""

import numpy as np
import pytest
from conftest import ROOT, SPECS, taking
from safetensors.numpy import load_file

import mnc
from mnc.backends.coreml import run_simulated as run_coreml_simulated
from mnc.backends.ncnn import run_ncnn
from mnc.backends.onnx import run_onnx
from mnc.backends.tflite import run_litert
from mnc.cli import main
from mnc.errors import InputError

TIMM = ROOT / "tests" / "fixtures" / "timm"
CASES = [  # timm model, its file, the bundled spec it is, α, timm's parameter count, timm's conventions the spec
    # states otherwise (the spec taken as a user would: stated as timm's where it must be stated, else left out)
    ("mobilenetv2_050", ".safetensors", "v2.mnet", 0.5, 694_085, {}),
    ("mobilenetv3_small_100", ".npz", "v3_small.mnet", 1.0, 1_522_981, {"batchnorm_eps": 1e-5}),
    ("mobilenetv1_100", ".npz", "v1.mnet", 1.0, 3_212_101, {"padding": "symmetric", "activation": "relu6"}),
    # Below α 1 timm's V3 is its own network: fixed stem and head, expansion a ratio of the scaled input.
    ("mobilenetv3_large_075", ".npz", "timm_v3_large.mnet", 0.75, 2_718_933, {}),
    ("mobilenetv3_small_050", ".npz", "timm_v3_small.mnet", 0.5, 573_349, {}),
]
# What mnc import writes where it is not the spec above: timm's V3s get the timm-flavoured specs.
IMPORTED_SPEC = {"mobilenetv3_small_100": "timm_v3_small.mnet"}
IDS = [c[0] for c in CASES]
RUNS = {"onnx": run_onnx, "tflite": run_litert, "coreml": run_coreml_simulated, "ncnn": run_ncnn}


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _check(y: np.ndarray, report: dict, expected: np.ndarray) -> None:
    """The artifact's output against timm's logits (as probabilities where the spec ends in softmax)."""
    assert np.abs(expected - expected.mean(axis=0)).max() > 0.1  # timm's outputs depend on the input
    y = y.reshape(len(expected), -1)
    if report["artifact"]["output"]["name"] == "probabilities":
        e = np.exp(expected - expected.max(axis=1, keepdims=True))
        np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), atol=1e-5, rtol=0)
    else:
        np.testing.assert_allclose(y, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


@pytest.mark.parametrize("target", ["onnx", "tflite", "ncnn"])
@pytest.mark.parametrize("name,suffix,spec,alpha,params,conventions", CASES, ids=IDS)
def test_a_bundled_spec_with_timm_weights_computes_what_timm_computed(
    tmp_path, name, suffix, spec, alpha, params, conventions, target
):
    data = load_file(TIMM / f"{name}_r64.safetensors")
    weights = TIMM / f"{name}{suffix}"
    if conventions:  # the bundled spec states them otherwise: refused, naming both values
        with pytest.raises(InputError, match=r"the spec states (\w+) = .* weights' framework computes with \1 = "):
            mnc.compile(SPECS / spec, target=target, alpha=alpha, resolution=64, weights=weights, out_dir=tmp_path)
    path = taking(SPECS / spec, tmp_path / "spec", conventions)
    result = mnc.compile(path, target=target, alpha=alpha, resolution=64, weights=weights, out_dir=tmp_path)
    report = result.report
    assert report["weights"]["layout"] == "timm" and report["classes"] == data["output"].shape[1]
    assert report["params"] == params  # as timm counts them: weights, biases, batch-norm scale and shift
    # Left out of the spec, ε takes timm's value, which is the spec's default: nothing to report.
    assert "conventions" not in report["weights"]
    (y,) = RUNS[target](result.artifact, {"input": data["input"]})
    _check(y, report, data["output"])


@pytest.mark.parametrize("name,suffix,spec,alpha,params,conventions", CASES, ids=IDS)
def test_import_finds_the_family_and_width_of_a_timm_state_dict(
    tmp_path, capsys, name, suffix, spec, alpha, params, conventions
):
    assert _run(["import", str(TIMM / f"{name}{suffix}"), "-o", str(tmp_path)]) == 0
    assert f"α {alpha:g}, 224×224, 5 classes) and {tmp_path / name}.safetensors ({params:,} parameters)" in (
        capsys.readouterr().out
    )
    text = (tmp_path / f"{name}.mnet").read_text()
    assert f"specs/{IMPORTED_SPEC.get(name, spec)}" in text and "| softmax" not in text  # timm's end in logits
    data = load_file(TIMM / f"{name}_r64.safetensors")
    result = mnc.compile(
        tmp_path / f"{name}.mnet",
        target="onnx",
        resolution=64,
        weights=tmp_path / f"{name}.safetensors",
        out_dir=tmp_path / "build",
    )
    (y,) = run_onnx(result.artifact, {"input": data["input"]})
    _check(y, result.report, data["output"])


@pytest.mark.parametrize(
    "target,options",
    [("onnx", {}), ("tflite", {}), ("coreml", {"precision": "fp32"}), ("coreml", {}), ("ncnn", {})],
)
def test_efficientnet_b0_with_timm_weights_computes_what_timm_computed(tmp_path, target, options):
    """SiLU and a squeeze-and-excite with SiLU inside, on every target: the spec in examples/specs with
    timm's state dict, against timm's own output (within the derived bounds, and 1e-4 of its scale)."""
    data = load_file(TIMM / "efficientnet_b0_r64.safetensors")
    spec = ROOT / "examples" / "specs" / "efficientnet_b0.mnet"
    weights = TIMM / "efficientnet_b0.npz"
    result = mnc.compile(spec, target=target, resolution=64, weights=weights, out_dir=tmp_path, **options)
    report = result.report
    assert report["weights"]["layout"] == "timm" and "conventions" not in report["weights"]
    assert report["params"] == 4_013_953  # timm's count with 5 classes
    assert result.typed.verification.passed
    if target == "coreml" and not options:  # float16: verified layer by layer, not held to timm's float32
        return
    (y,) = RUNS[target](result.artifact, {"input": data["input"]})
    _check(y, report, data["output"])


def test_timm_weights_that_fit_no_family_are_refused(tmp_path, capsys):
    data = load_file(TIMM / "mobilenetv2_050.safetensors")
    del data["blocks.1.0.conv_pwl.weight"]
    from safetensors.numpy import save_file

    save_file(data, tmp_path / "broken.safetensors")
    assert _run(["import", str(tmp_path / "broken.safetensors"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{tmp_path / 'broken.safetensors'}: error: the model's layers and widths fit none of timm's")
    assert not (tmp_path / "out").exists()
    argv = ["compile", str(SPECS / "v2.mnet"), "--alpha", "0.5", "--target", "onnx", "-o", str(tmp_path / "out")]
    assert _run([*argv, "--weights", str(tmp_path / "broken.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "the timm state dict's modules, matched in order of computation: module 'blocks.1.0.conv_dw'" in err, err
    assert "does not fit the network's next layer 'stage2.block0.expand'" in err and "describe" not in err
