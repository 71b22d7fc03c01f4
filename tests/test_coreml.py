"""Core ML: the executor of saved packages op by op, end-to-end compiles in fp32 and fp16, and
fault injection into saved packages that `mnc verify` must catch."""

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
from conftest import SPECS, fp16_verifier

from mnc.backends import coreml as coreml_backend
from mnc.backends.coreml import coremltools
from mnc.backends.coreml_exec import CoreMLProgram, ExecutorError
from mnc.backends.target import Executor
from mnc.cli import main
from mnc.ir import kernels
from mnc.pipeline import TargetOptions, compile_spec

ct = coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402


def _save(tmp_path, build, shape, precision="fp32", name="p"):
    program = mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=ct.target.iOS16)(build)
    with contextlib.redirect_stderr(io.StringIO()):
        model = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS16,
            compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
        )
    path = tmp_path / f"{name}.mlpackage"
    model.save(str(path))
    return path


def _run(path, x):
    program = CoreMLProgram(path)
    env = program.run({program.inputs[0]: x})
    return np.asarray(env[program.outputs[0]], dtype=np.float64)


RNG = np.random.default_rng(0)
X = RNG.standard_normal((1, 4, 9, 8)).astype(np.float32)


@pytest.mark.parametrize("groups,stride,pads", [(1, 1, (1, 1, 1, 1)), (2, 2, (0, 1, 2, 0)), (4, 2, (1, 0, 0, 1))])
def test_conv(tmp_path, groups, stride, pads):
    w = RNG.standard_normal((8, 4 // groups, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(8).astype(np.float32)
    top, left, bottom, right = pads

    def build(input):
        return mb.conv(
            x=input,
            weight=w,
            bias=b,
            strides=[stride, stride],
            pad_type="custom",
            pad=[top, bottom, left, right],
            groups=groups,
        )

    expected = kernels.conv2d(
        X.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (stride, stride), pads, groups
    )
    np.testing.assert_allclose(_run(_save(tmp_path, build, X.shape), X), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "op,reference",
    [
        (lambda x: mb.relu6(x=mb.mul(x=x, y=np.float32(4.0))), lambda x: np.clip(4 * x, 0, 6)),
        (lambda x: mb.relu(x=x), lambda x: np.maximum(x, 0)),
        (lambda x: mb.clip(x=x, alpha=np.float32(-0.5), beta=np.float32(0.25)), lambda x: np.clip(x, -0.5, 0.25)),
        (lambda x: mb.reduce_mean(x=x, axes=[2, 3], keep_dims=True), lambda x: x.mean(axis=(2, 3), keepdims=True)),
        (
            lambda x: mb.reshape(x=mb.reduce_mean(x=x, axes=[2, 3], keep_dims=True), shape=[1, -1]),
            lambda x: x.mean(axis=(2, 3)).reshape(1, -1),
        ),
        (
            lambda x: mb.softmax(x=mb.reshape(x=x, shape=[1, -1]), axis=1),
            lambda x: np.exp(x.reshape(1, -1)) / np.exp(x.reshape(1, -1)).sum(),
        ),
        (lambda x: mb.add(x=x, y=mb.sub(x=x, y=np.float32(1.5))), lambda x: 2 * x - 1.5),
        (
            lambda x: mb.batch_norm(
                x=x,
                mean=np.arange(4, dtype=np.float32),
                variance=np.full(4, 4.0, np.float32),
                gamma=np.full(4, 2.0, np.float32),
                beta=np.ones(4, np.float32),
                epsilon=0.0,
            ),
            lambda x: (x - np.arange(4).reshape(1, 4, 1, 1)) + 1.0,
        ),
    ],
    ids=["relu6", "relu", "clip", "reduce_mean", "reshape", "softmax", "add_sub", "batch_norm"],
)
def test_elementwise_and_reductions(tmp_path, op, reference):
    np.testing.assert_allclose(
        _run(_save(tmp_path, op, X.shape), X), reference(X.astype(np.float64)), rtol=1e-5, atol=1e-6
    )


def test_linear(tmp_path):
    w = RNG.standard_normal((5, 32)).astype(np.float32)
    b = RNG.standard_normal(5).astype(np.float32)
    x = RNG.standard_normal((1, 32)).astype(np.float32)
    path = _save(tmp_path, lambda input: mb.linear(x=input, weight=w, bias=b), x.shape)
    np.testing.assert_allclose(_run(path, x), x @ w.T + b, rtol=1e-5)


def test_fp16_program_is_rounded_like_fp16(tmp_path):
    x = np.array([[1.0001, 3.14159, 1000.7, 1e-5]], np.float32)
    path = _save(tmp_path, lambda input: mb.mul(x=input, y=np.float32(1.0)), x.shape, precision="fp16")
    program = CoreMLProgram(path)
    assert "cast" in [op.type for op in program.operations]
    np.testing.assert_array_equal(_run(path, x), x.astype(np.float16).astype(np.float64))


def test_unknown_operation_fails_loudly(tmp_path):
    path = _save(tmp_path, lambda input: mb.sin(x=input), X.shape)
    with pytest.raises(ExecutorError, match="operation 'sin' .* is not supported by mnc's Core ML executor"):
        _run(path, X)


# ---- end to end --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,alpha,resolution,precision",
    [
        ("v1.mnet", 0.25, 128, "fp32"),
        ("v1.mnet", 0.5, 160, "fp16"),
        ("v1.mnet", 1.0, 224, "fp16"),
        ("v2.mnet", 0.35, 96, "fp32"),
        ("v2.mnet", 1.0, 224, "fp32"),
        ("v2.mnet", 0.5, 128, "fp16"),
        ("v2.mnet", 1.4, 160, "fp16"),
    ],
)
def test_compile_verifies_the_saved_package(tmp_path, spec, alpha, resolution, precision):
    result = compile_spec(
        SPECS / spec,
        target="coreml",
        alpha=alpha,
        resolution=resolution,
        out_dir=tmp_path,
        options=TargetOptions(precision=precision),
    )
    v = result.typed.verification
    run = v.runs[0]
    assert v.passed and "simulated: Core ML runtime not available" in run.executor
    if precision == "fp32":  # every element within the rounding error derived for it (mnc/verification/bounds.py)
        assert run.exceedance <= 1 and run.comparison.max_rel_err <= 1e-4
    else:  # each layer within its derived float16 bound; the whole network reported
        layers = v.check("layers")
        assert layers.passed and layers.section["max_error_over_bound"] <= 1
        assert layers.section["layers"] > 20 and layers.section["samples"] >= 2
        assert run.comparison.cosine > 0.999  # reported, not gated
    assert result.artifact.is_dir() and result.artifact.suffix == ".mlpackage"
    program = CoreMLProgram(result.artifact)
    types = {op.type for op in program.operations}
    assert "batch_norm" not in types and ("cast" in types) == (precision == "fp16")


@pytest.fixture(scope="module")
def v2_package(tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml")
    assert (
        main(
            [
                "compile",
                str(SPECS / "v2.mnet"),
                "--alpha",
                "0.35",
                "--resolution",
                "96",
                "--target",
                "coreml",
                "--precision",
                "fp32",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    return out / "v2_0.35_96.mlpackage"


def _copy(package, tmp_path):
    copy = tmp_path / package.name
    shutil.copytree(package, copy)
    return copy


def test_verify_passes_on_an_intact_copy(v2_package, tmp_path, capsys):
    assert main(["verify", str(_copy(v2_package, tmp_path)), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "pass" and result["tolerance"]["precision"] == "fp32"


def test_flipped_weights_in_the_weight_file_fail_verification(v2_package, tmp_path, capsys):
    copy = _copy(v2_package, tmp_path)
    program = CoreMLProgram(copy)
    op = next(
        op
        for op in program.operations
        if op.type == "const"
        and "stage4_block0_dw" in op.outputs[0].name
        and op.attributes["val"].HasField("blobFileValue")
    )
    offset = op.attributes["val"].blobFileValue.offset
    weights = copy / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    # A blob's data follows its 64-byte header; flip the sign bit of the first 64 fp32 weights.
    for i in range(64):
        data[offset + 64 + 4 * i + 3] ^= 0x80
    weights.write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 3
    assert "failed against the reference" in capsys.readouterr().err


def test_a_dropped_operation_fails_verification(v2_package, tmp_path, capsys):
    copy = _copy(v2_package, tmp_path)
    spec = ct.utils.load_spec(str(copy))
    function = spec.mlProgram.functions["main"]
    ops = function.block_specializations[function.opset].operations
    index = next(i for i, op in enumerate(ops) if op.type == "conv" and "stage3" in op.outputs[0].name)
    del ops[index]
    (copy / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(spec.SerializeToString())
    assert main(["verify", str(copy)]) == 3
    assert "which nothing in the program defines" in capsys.readouterr().err


def test_an_unreadable_package_is_bad_input(tmp_path, capsys):
    broken = tmp_path / "broken.mlpackage"
    broken.mkdir()
    assert main(["verify", str(broken)]) == 2
    assert "is not a readable Core ML package" in capsys.readouterr().err


def test_image_input_and_labels_make_a_verified_classifier(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    result = compile_spec(
        SPECS / "v1.mnet",
        target="coreml",
        alpha=0.25,
        resolution=96,
        classes=10,
        out_dir=tmp_path,
        options=TargetOptions(precision="fp32", image_input=True, labels=str(labels)),
    )
    v = result.typed.verification
    assert v.passed and v.runs[0].comparison.max_rel_err <= 1e-4  # exact per-channel normalisation
    spec = ct.utils.load_spec(str(result.artifact))
    assert spec.description.input[0].type.HasField("imageType") and spec.description.input[0].name == "input"
    assert spec.description.predictedFeatureName == "classLabel"
    # What Xcode shows: an image classifier's preview, and a description of every feature.
    assert spec.description.metadata.userDefined["com.apple.coreml.model.preview.type"] == "imageClassifier"
    assert all(f.shortDescription for f in [*spec.description.input, *spec.description.output])
    program = CoreMLProgram(result.artifact)
    classify = next(op for op in program.operations if op.type == "classify")
    assert program.argument(classify.inputs["classes"].arguments[0]) == [f"digit {i}" for i in range(10)]
    assert main(["verify", str(result.artifact)]) == 0  # image input recorded and fed pixels again


@pytest.mark.parametrize(
    "text,message",
    [
        ("a\nb\n", "2 labels for a network with 10 classes"),
        ("\n".join("abcdefghij").replace("c", "b"), "label 'b' appears twice (lines 2 and 3)"),
        ("a\n\nc\n" + "\n".join("defghij"), "line 2 is empty; one label per line"),
    ],
)
def test_bad_labels_exit_2(tmp_path, capsys, text, message):
    labels = tmp_path / "labels.txt"
    labels.write_text(text)
    code = main(
        [
            "compile",
            str(SPECS / "v1.mnet"),
            "--alpha",
            "0.25",
            "--resolution",
            "64",
            "--classes",
            "10",
            "--target",
            "coreml",
            "--labels",
            str(labels),
            "-o",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and str(labels) in err and not (tmp_path / "out").exists()


def test_coreml_options_are_refused_for_onnx(tmp_path, capsys):
    assert (
        main(
            [
                "compile",
                str(SPECS / "v1.mnet"),
                "--target",
                "onnx",
                "--precision",
                "fp32",
                "--deployment-target",
                "iOS17",
                "-o",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "--precision, --deployment-target: only for --target coreml" in capsys.readouterr().err


def test_builds_are_reproducible_and_carry_metadata(tmp_path):
    spec = tmp_path / "meta.mnet"
    spec.write_text((SPECS / "v2.mnet").read_text() + 'author = "mnc tests"\nlicense = "Apache-2.0"\nversion = "1.2"\n')
    reports = [
        compile_spec(spec, target="coreml", alpha=0.35, resolution=64, out_dir=tmp_path / d).typed for d in ("a", "b")
    ]
    assert reports[0].artifact.sha256 == reports[1].artifact.sha256
    meta = ct.utils.load_spec(str(tmp_path / "a" / "meta_0.35_64.mlpackage")).description.metadata
    assert (meta.author, meta.license, meta.versionString) == ("mnc tests", "Apache-2.0", "1.2")
    assert meta.shortDescription.startswith("MobileNetV2")
    user = dict(meta.userDefined)
    assert user["mnc.spec_name"] == "mobilenet_v2" and user["mnc.alpha"] == "0.35" and user["mnc.resolution"] == "64"
    assert user["mnc.passes"] == "fold_bn,fuse_act,cleanup" and user["mnc.precision"] == "fp16" and user["mnc.version"]
    assert "com.github.apple.coremltools.conversion_date" not in user


def test_failed_verification_leaves_the_old_package(tmp_path, monkeypatch, capsys):
    # fp32: the executor's whole-network run is what is checked (an fp16 package is checked layer by layer)
    fp32 = TargetOptions(precision="fp32")
    out = tmp_path / "out"
    assert compile_spec(SPECS / "v2.mnet", target="coreml", alpha=0.35, resolution=64, out_dir=out, options=fp32).report
    package = out / "v2_0.35_64.mlpackage"
    before = sorted(p.relative_to(package) for p in package.rglob("*"))
    real = coreml_backend.TARGET.executors()[0]
    monkeypatch.setattr(
        coreml_backend.TARGET,
        "executors",
        lambda: [Executor(real.label, lambda a, f: [y * 1.5 for y in real.run(a, f)])],
    )
    assert (
        main(
            [
                "compile",
                str(SPECS / "v2.mnet"),
                "--alpha",
                "0.35",
                "--resolution",
                "64",
                "--target",
                "coreml",
                "--precision",
                "fp32",
                "--seed",
                "9",
                "-o",
                str(out),
            ]
        )
        == 3
    )
    assert sorted(p.relative_to(package) for p in package.rglob("*")) == before
    assert sorted(p.name for p in out.iterdir()) == ["v2_0.35_64.mlpackage", "v2_0.35_64.mlpackage.report.json"]


def test_a_fresh_process_compiles_and_verifies_a_package(tmp_path):
    """The CLI in its own process: the path where the reference and the executor's samples run in
    forked processes (a long-lived process that has loaded ONNX Runtime uses threads instead)."""
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnc",
            "compile",
            "specs/v3_small.mnet",
            "--resolution",
            "96",
            "--target",
            "coreml",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "v3_small_1.0_96.mlpackage.report.json").read_text())
    assert (
        report["verification"]["verdict"] == "pass" and report["verification"]["reference_check"]["verdict"] == "pass"
    )


def test_a_layer_off_by_a_few_float16_steps_fails_the_fp16_layer_check(tmp_path):
    """The fp16 check can fail: the package is checked against an IR whose one layer's weights are
    four float16 steps away from what the package holds, as a wrong kernel or weight would show."""
    result = compile_spec(SPECS / "v2.mnet", target="coreml", alpha=0.35, resolution=64, out_dir=tmp_path)
    emitted, verify = fp16_verifier(result.artifact, coreml_backend.TARGET, SPECS / "v2.mnet", 0.35, 64)
    assert verify(emitted).passed
    node = emitted.node("stage3.block1.project")
    node.params = {**node.params, "weight": node.params["weight"] * (1 + 4 * 2.0**-11)}
    failed = verify(emitted)
    (layers,) = [c for c in failed.checks if c.name == "layers"]
    assert not failed.passed and layers.section["worst_layer"] == "stage3.block1.project", layers.section


def test_verifying_a_float16_package_against_another_spec_is_a_failed_verification(tmp_path, capsys):
    """Its layers cannot be matched with the other spec's: the layer check fails, nothing crashes."""
    argv = ["--alpha", "0.25", "--resolution", "64"]
    assert main(["compile", str(SPECS / "v1.mnet"), *argv, "--target", "coreml", "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    package = tmp_path / "v1_0.25_64.mlpackage"
    assert main(["verify", str(package), "--spec", str(SPECS / "v2.mnet"), *argv]) == 3
    err = capsys.readouterr().err
    assert "failed against the reference" in err and "could not run it" in err


@pytest.mark.parametrize(
    "scale,code,message",
    [
        # Weights beyond float16's range cannot be stored: bad input at the layer, before anything is written.
        (1e6, 2, "v1.mnet:38:20: error: --precision fp16: layer 'stage11.block0.fc' has weight values up to"),
        # Weights that fit but logits that do not: the layer check names the layer that overflows.
        (3e4, 3, "failed: layer 'stage11.block0.fc' overflows float16: its values reach"),
    ],
)
def test_values_beyond_float16s_range_are_named(tmp_path, capsys, scale, code, message):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    argv = [str(SPECS / "v1.mnet"), "--alpha", "0.25", "--resolution", "64"]
    saved = tmp_path / "w.safetensors"
    assert main(["compile", *argv, "--target", "onnx", "-o", str(tmp_path / "a"), "--save-weights", str(saved)]) == 0
    with safe_open(str(saved), "np") as f:
        weights, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    for key in ("stage11.block0.fc.weight", "stage11.block0.fc.bias"):
        weights[key] = weights[key] * scale
    save_file(weights, str(tmp_path / "big.safetensors"), metadata=meta)
    capsys.readouterr()
    out = tmp_path / "out"
    assert (
        main(["compile", *argv, "--target", "coreml", "--weights", str(tmp_path / "big.safetensors"), "-o", str(out)])
        == code
    )
    err = capsys.readouterr().err
    assert message in err and "65504" in err and "RuntimeWarning" not in err and "inf times" not in err
    assert not out.exists() or not any(out.iterdir())
