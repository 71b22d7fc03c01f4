"""The command line: files written, exit codes, messages, and nothing written on failure."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import ROOT, SPECS, TINY, replace_line

from mnc.backends import onnx as onnx_backend
from mnc.backends.target import Executor
from mnc.cli import main


def _run(argv) -> int:
    """main()'s exit code, including argparse's own exits for malformed arguments."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _compile(tmp_path, *extra, spec="v1.mnet"):
    return _run(["compile", str(SPECS / spec), "--target", "onnx", "-o", str(tmp_path), *extra])


def test_compile_writes_artifact_and_report(tmp_path, capsys):
    assert _compile(tmp_path, "--alpha", "0.5", "--resolution", "128") == 0
    artifact = tmp_path / "v1_0.5_128.onnx"
    report = json.loads((tmp_path / "v1_0.5_128.onnx.report.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1_0.5_128.onnx", "v1_0.5_128.onnx.report.json"]
    data = artifact.read_bytes()
    assert report["artifact"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert report["artifact"]["size_bytes"] == len(data)
    assert (report["spec"]["name"], report["alpha"], report["resolution"], report["target"]) == (
        "mobilenet_v1",
        0.5,
        128,
        "onnx",
    )
    assert report["classes"] == 1000 and report["macs"] > 0 and report["params"] > 0
    v = report["verification"]
    assert (
        v["verdict"] == "pass" and v["metrics"]["exceedance"] <= 1 and "standard deviations" in v["tolerance"]["rule"]
    )
    assert "ONNX Runtime" in v["reference"] and "ONNX Runtime" in v["executor"]
    assert v["reference_check"]["verdict"] == "pass" and "interpreter" in v["reference_check"]["against"]
    assert [p["name"] for p in report["passes"]] == ["fold_bn", "fuse_act", "cleanup"]
    # putting it in place is not timed: the report goes with it
    assert {"parse", "lower", "weights", "passes", "emit", "reference", "execute"} <= set(report["timings_s"])
    assert "wrote " in capsys.readouterr().out


def test_rho_maps_to_rounded_resolution(tmp_path):
    assert _compile(tmp_path, "--alpha", "0.25", "--rho", "0.571") == 0  # round(224 · 0.571) = 128
    assert (tmp_path / "v1_0.25_128.onnx").exists()


def test_compiling_twice_gives_identical_bytes(tmp_path):
    assert _compile(tmp_path / "a", "--alpha", "0.25", "--resolution", "96", "--seed", "4", spec="v2.mnet") == 0
    assert _compile(tmp_path / "b", "--alpha", "0.25", "--resolution", "96", "--seed", "4", spec="v2.mnet") == 0
    name = "v2_0.25_96.onnx"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_bad_spec_exits_2_with_located_message_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "bad.mnet"
    spec.write_text(replace_line(TINY, 12, "| bottlenek      | 6 | 24 | 2 | 2 |"))
    out = tmp_path / "out"
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:12:3: error: unknown operator 'bottlenek'; did you mean 'bottleneck'?" in err
    assert "  | bottlenek      | 6 | 24 | 2 | 2 |\n    ^~~~~~~~~" in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--alpha", "0"], "mnc: error: --alpha 0: width multiplier α must be > 0"),
        (["--alpha", "abc"], "argument --alpha: expected a number, got 'abc'"),
        (["--rho", "0.5", "--resolution", "96"], "not allowed with argument"),
        (["--resolution", "0"], "--resolution 0: resolution 0: the input must be at least 1×1"),
        (["--resolution", "16"], "resolution 16 is too small for this network"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, argv, message):
    code = _compile(tmp_path, *argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())


def test_missing_spec_and_unknown_target(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "nope.mnet"), "--target", "onnx"]) == 2
    assert "cannot read spec" in capsys.readouterr().err
    assert _run(["compile", str(SPECS / "v1.mnet"), "--target", "tensorrt"]) == 2
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def _perturbing_executor(scale):
    (real,) = onnx_backend.TARGET.executors()

    def run(artifact, feeds):
        return [y + scale * np.abs(y).max() for y in real.run(artifact, feeds)]

    return lambda: [Executor(real.label, run)]


def test_failed_verification_exits_3_and_leaves_destination_untouched(tmp_path, capsys, monkeypatch):
    name = "v2_0.35_96"
    (tmp_path / f"{name}.onnx").write_bytes(b"previous artifact")
    monkeypatch.setattr(onnx_backend.TARGET, "executors", _perturbing_executor(1e-3))
    assert _compile(tmp_path, "--alpha", "0.35", "--resolution", "96", spec="v2.mnet") == 3
    err = capsys.readouterr().err
    assert "verification of v2_0.35_96.onnx failed" in err and "max relative error 0.001" in err
    assert (tmp_path / f"{name}.onnx").read_bytes() == b"previous artifact"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.onnx"]  # no report, no temp files


def test_runtime_rejecting_the_artifact_is_a_failed_verification(tmp_path, capsys, monkeypatch):
    def broken(artifact, feeds):
        raise RuntimeError("cannot load model")

    monkeypatch.setattr(onnx_backend.TARGET, "executors", lambda: [Executor("broken runtime", broken)])
    assert _compile(tmp_path, "--alpha", "0.25", "--resolution", "64") == 3
    assert "RuntimeError: cannot load model" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    assert (
        main(
            [
                "compile",
                str(SPECS / "v2.mnet"),
                "--alpha",
                "0.35",
                "--resolution",
                "96",
                "--seed",
                "7",
                "--target",
                "onnx",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    return out / "v2_0.35_96.onnx"


def test_verify_passes_on_a_copied_artifact_using_its_metadata(compiled, tmp_path, capsys):
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(compiled.read_bytes())
    assert main(["verify", str(copy), "--spec", str(SPECS / "v2.mnet"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"] == "pass" and (result["alpha"], result["resolution"], result["seed"]) == (0.35, 96, 7)
    assert result["spec"]["matches_artifact"]
    assert main(["verify", str(copy)]) == 0  # the spec recorded in the artifact


def test_verify_fails_on_tampered_weights(compiled, tmp_path, capsys):
    model = onnx.load(str(compiled))
    init = next(i for i in model.graph.initializer if i.name == "stage4.block1.dw.weight")
    weights = onnx.numpy_helper.to_array(init).copy()
    weights.flat[0] += 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(weights, init.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    assert main(["verify", str(tampered), "--spec", str(SPECS / "v2.mnet")]) == 3
    assert "failed against the reference" in capsys.readouterr().err


def test_verify_against_a_different_configuration_fails(compiled, capsys):
    assert main(["verify", str(compiled), "--spec", str(SPECS / "v2.mnet"), "--seed", "8"]) == 3
    assert main(["verify", str(compiled), "--spec", str(SPECS / "v1.mnet")]) == 3


def test_verify_rejects_unreadable_artifacts(tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model at all")
    assert main(["verify", str(junk), "--spec", str(SPECS / "v1.mnet")]) == 2
    assert "is not a readable ONNX model" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "missing.onnx")]) == 2
    assert main(["verify", str(tmp_path / "model.bin")]) == 2
    assert "unknown artifact type" in capsys.readouterr().err


def test_passes_none_emits_the_unoptimised_graph(tmp_path):
    assert _compile(tmp_path, "--alpha", "0.25", "--resolution", "64", "--passes", "none") == 0
    model = onnx.load(str(tmp_path / "v1_0.25_64.onnx"))
    assert "BatchNormalization" in {n.op_type for n in model.graph.node}
    assert json.loads((tmp_path / "v1_0.25_64.onnx.report.json").read_text())["passes"] == []


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--passes", "fuse_act,fold_bn"], "'fold_bn' must run before 'fuse_act'"),
        (["--passes", "fold"], "unknown pass 'fold'"),
    ],
)
def test_bad_pipelines_exit_2(tmp_path, capsys, argv, message):
    assert _compile(tmp_path, *argv) == 2
    assert message in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_ir_after_a_pass(capsys):
    base = ["ir", str(SPECS / "v2.mnet"), "--alpha", "0.35", "--resolution", "64"]
    assert main(base + ["--after", "none"]) == 0
    lowered = capsys.readouterr().out
    assert "stage1.block0.dw.bn = batchnorm(stage1.block0.dw) eps=1e-05 -> 16×32×32" in lowered
    assert main(base + ["--after", "fold_bn"]) == 0
    folded = capsys.readouterr().out
    assert "batchnorm" not in folded and "fn=relu6" in folded
    assert (
        "stage1.block0.dw = conv(stage0.block0.conv.act) out_channels=16 kernel=3 stride=1 pads=[1,1,1,1] "
        "groups=16 bias -> 16×32×32  {weight[16, 1, 3, 3] bias[16]}  # line 28" in folded
    )
    assert main(base) == 0
    assert "fused_act=relu6" in capsys.readouterr().out
    assert _run(base + ["--after", "quantize"]) == 2
    assert "--after quantize: not a pass of the pipeline (fold_bn, fuse_act, cleanup)" in capsys.readouterr().err


def test_summary_json(capsys):
    assert main(["summary", str(SPECS / "v2.mnet"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["name"], s["alpha"], s["resolution"], s["classes"]) == ("mobilenet_v2", 1.0, 224, 1000)
    assert (s["params"], s["macs"]) == (3_504_872, 300_774_272)
    assert sum(layer["macs"] for layer in s["layers"]) == s["macs"]
    first = s["layers"][0]
    assert {k: first[k] for k in ("name", "op", "kernel", "stride", "input_shape", "output_shape")} == {
        "name": "stage0.block0.conv",
        "op": "conv",
        "kernel": 3,
        "stride": 2,
        "input_shape": [3, 224, 224],
        "output_shape": [32, 112, 112],
    }
    assert first["params"] == 864 and first["macs"] == 10_838_016  # 112·112·32·3·3·3


def test_summary_table(capsys):
    assert main(["summary", str(SPECS / "v1.mnet"), "--alpha", "0.25", "--resolution", "128"]) == 0
    out = capsys.readouterr().out
    assert "stage1.block0.dw" in out and "conv_dw" in out and "64×64×8" in out
    assert "mobilenet_v1  α=0.25  resolution=128  classes=1000" in out and "total:" in out


def test_installed_entry_point_runs_without_traceback(tmp_path):
    """A real process, as CI and users run it."""
    bad = tmp_path / "bad.mnet"
    bad.write_text("name = x\nalpha 2\n")
    proc = subprocess.run([sys.executable, "-m", "mnc", "summary", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and f"{bad}:2:7: error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnc",
            "compile",
            "specs/v1.mnet",
            "--alpha",
            "0.25",
            "--resolution",
            "64",
            "--target",
            "onnx",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "v1_0.25_64.onnx").exists() and (tmp_path / "v1_0.25_64.onnx.report.json").exists()


def test_messages_name_flags_on_the_command_line_and_keyword_arguments_in_python(tmp_path, capsys):
    from mnc.api import compile
    from mnc.cli.parser import WORDING
    from mnc.errors import InputError, param, wording

    assert (param("calib_method", "mse"), param("alpha", 0.5), param("calib")) == (
        "calib_method='mse'",
        "alpha=0.5",
        "calib=",
    )
    with wording(WORDING):
        assert (param("calib_method", "mse"), param("alpha", 0.5), param("calib")) == (
            "--calib-method mse",
            "--alpha 0.5",
            "--calib",
        )
        assert param("out_dir") == "--output-dir" and param("calib", metavar="DATA") == "--calib DATA"
    assert param("calib") == "calib="  # the command line's wording ends with its command
    with pytest.raises(
        InputError, match="passes='quantize_int8': int8 quantisation runs with quantize='int8' calib=DATA"
    ):
        compile(SPECS / "v1.mnet", passes="quantize_int8", out_dir=tmp_path)
    assert (
        main(["compile", str(SPECS / "v1.mnet"), "--target", "onnx", "--passes", "quantize_int8", "-o", str(tmp_path)])
        == 2
    )
    assert "--passes quantize_int8: int8 quantisation runs with --quantize int8 --calib DATA" in capsys.readouterr().err


def test_help_names_each_targets_values_and_a_build_imports_only_its_target(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compile", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    assert (
        "--precision P compute precision of the model [coreml: fp16 (default), fp32; tflite: fp32 (default), fp16; "
        "ncnn: fp32 (default), fp16]" in out
    )
    # A fresh process: building for TFLite never imports the ONNX writer's or Core ML's target modules.
    script = (
        "import sys; from mnc.cli import main; "
        f"code = main(['compile', 'specs/v1.mnet', '--alpha', '0.25', '--resolution', '64', '--target', 'tflite', "
        f"'-o', {str(tmp_path)!r}]); "
        "print(code, sorted(m for m in sys.modules if m.startswith(('mnc.backends.coreml', 'coremltools'))))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stdout + proc.stderr
