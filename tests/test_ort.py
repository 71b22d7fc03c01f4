"""The ONNX Runtime Mobile target: mnc's ONNX converted to the ORT format for ARM, with its operator
config, reproducible bytes, and int8 with 8-bit weights verified with the same verdict on every host."""

import hashlib
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SPECS

import mnc
from mnc.backends import ort as ort_target
from mnc.backends import ort_canonical
from mnc.backends.ort import CONFIG_SUFFIX, run_ort
from mnc.cli import main
from mnc.frontend import load_spec
from mnc.pipeline import Quantization, compile_spec
from mnc.samples import normalise

DIGITS = ROOT / "tests" / "fixtures" / "digits"
ALL_SPECS = sorted(SPECS.glob("*.mnet")) + sorted((ROOT / "examples" / "specs").glob("*.mnet"))


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_every_spec_converts_and_verifies(tmp_path, spec):
    # SSDLite's extra layers halve the map five times after output stride 32: 288 is its smallest input.
    resolution = 288 if spec.stem.startswith("ssdlite") else 64
    result = compile_spec(spec, target="ort", resolution=resolution, out_dir=tmp_path)
    assert result.typed.verification.passed


def test_ort_model_with_operator_config_and_reproducible_bytes(tmp_path):
    a = compile_spec(SPECS / "v3_small.mnet", target="ort", resolution=64, out_dir=tmp_path / "a")
    b = compile_spec(SPECS / "v3_small.mnet", target="ort", resolution=64, out_dir=tmp_path / "b")
    assert a.typed.verification.passed
    assert a.artifact.read_bytes()[4:8] == b"ORTM"  # the ORT format's file identifier
    config = a.artifact.with_name(a.artifact.name[: -len(".ort")] + CONFIG_SUFFIX)
    assert "ai.onnx;" in config.read_text() and str(tmp_path) not in config.read_text()
    assert a.typed.target_section["reproducible_bytes"] is True
    assert a.artifact.read_bytes() == b.artifact.read_bytes()
    assert main(["verify", str(a.artifact)]) == 0


@pytest.mark.parametrize("quantization", [None, Quantization("synthetic", 4)], ids=["fp32", "int8"])
def test_the_operator_config_is_the_one_onnx_runtimes_tool_writes(tmp_path, quantization):
    from onnxruntime.tools.ort_format_model.utils import create_config_from_models

    result = compile_spec(
        SPECS / "v3_small.mnet", target="ort", resolution=32, quantization=quantization, out_dir=tmp_path
    )
    ours = result.artifact.with_name(result.artifact.name[: -len(".ort")] + CONFIG_SUFFIX).read_text()
    create_config_from_models([result.artifact], tmp_path / "tool.config", False)
    theirs = [line for line in (tmp_path / "tool.config").read_text().splitlines() if not line.startswith("# - ")]
    assert ours.splitlines() == theirs
    assert "com.microsoft;" in ours if quantization else "ai.onnx;" in ours


def test_ort_int8_has_8_bit_weights_and_keeps_the_trained_networks_accuracy(tmp_path):
    common = dict(target="ort", alpha=0.35, resolution=32, weights=DIGITS / "mobilenet_v2_digits.safetensors")
    q = compile_spec(
        SPECS / "v2.mnet", out_dir=tmp_path / "q", quantization=Quantization(str(DIGITS / "calib"), 64), **common
    )
    assert q.typed.quantization.weight_bits == 8
    assert q.typed.verification.passed
    f = compile_spec(SPECS / "v2.mnet", out_dir=tmp_path / "f", **common)
    data = np.load(DIGITS / "heldout.npz")
    x = normalise(load_spec(SPECS / "v2.mnet").settings, data["images"].astype(np.float32))
    (yq,) = run_ort(q.artifact, {"input": x})
    (yf,) = run_ort(f.artifact, {"input": x})
    labels = data["labels"]
    assert (yq.argmax(1) == labels).mean() >= (yf.argmax(1) == labels).mean() - 0.01
    assert (yq.argmax(1) == yf.argmax(1)).mean() >= 0.98
    assert main(["verify", str(q.artifact), "--weights", str(DIGITS / "mobilenet_v2_digits.safetensors")]) == 0


def test_a_changed_weight_fails_verify(tmp_path):
    result = compile_spec(SPECS / "v2.mnet", target="ort", alpha=0.35, resolution=32, out_dir=tmp_path)
    data = bytearray(result.artifact.read_bytes())
    # Scale a run of float weights in the middle of the file (initialisers make up most of it).
    start = len(data) // 2 & ~3
    weights = np.frombuffer(bytes(data[start : start + 4096]), np.float32) * 1.5
    data[start : start + 4096] = weights.astype(np.float32).tobytes()
    broken = tmp_path / "broken.ort"
    broken.write_bytes(bytes(data))
    assert main(["verify", str(broken)]) == 3


def test_a_weight_changed_by_one_int8_step_fails_the_constants_check(tmp_path, capsys):
    """Too small to move the outputs past any tolerance, a one-step change of one int8 weight is a
    constant that differs from the IR's quantisation, named as such."""
    weights = DIGITS / "mobilenet_v2_digits.safetensors"
    common = dict(target="ort", alpha=0.35, resolution=32, weights=weights)
    q = compile_spec(
        SPECS / "v2.mnet", out_dir=tmp_path, quantization=Quantization(str(DIGITS / "calib"), 64), **common
    )
    verified = q.typed.verification.constants
    assert verified.checked - verified.folded > 100  # the folded ones are not reported as checked
    constants = ort_target.TARGET.constants(q.artifact)
    weight = constants["stage4.block0.expand.weight_q"]
    data = bytearray(q.artifact.read_bytes())
    at = bytes(data).find(weight.tobytes())
    assert at > 0 and bytes(data).count(weight.tobytes()) == 1
    data[at + 7] = (data[at + 7] + (1 if weight.ravel()[7] < 127 else -1)) % 256
    broken = tmp_path / "broken.ort"
    broken.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(broken), "--weights", str(weights)]) == 3
    assert "constant 'stage4.block0.expand.weight_q' differs" in capsys.readouterr().err


def test_ort_bytes_do_not_depend_on_the_callers_environment_or_folders(tmp_path, monkeypatch):
    """A sweep's worker, a Dask worker and a shell differ in environment, working folder and staging
    path: none of that may reach the bytes (each moves the converting process's addresses, by which
    ONNX Runtime lays out its kernel-type resolver)."""
    mnc.compile(SPECS / "v1.mnet", target="onnx", alpha=0.25, resolution=32, out_dir=tmp_path)
    source = tmp_path / "v1_0.25_32.onnx"
    ort_target.convert(source, tmp_path / "a.ort")
    monkeypatch.setenv("MNC_TEST_PADDING", "x" * 4099)
    monkeypatch.setenv("PYTHONHASHSEED", "random")
    (tmp_path / "a much longer folder name" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a much longer folder name")
    assert ort_target.convert(source, tmp_path / "a much longer folder name" / "deeper" / "b.ort") is None
    assert (tmp_path / "a.ort").read_bytes() == (
        tmp_path / "a much longer folder name" / "deeper" / "b.ort"
    ).read_bytes()


def _copy_of_mnc(where):
    where.mkdir(parents=True)
    for part in ("mnc", "grammar", "specs"):
        shutil.copytree(ROOT / part, where / part, ignore=shutil.ignore_patterns("__pycache__"))
    return where


def test_ort_bytes_are_the_same_from_installs_at_different_paths(tmp_path):
    """The issue's case: copies of the same mnc at different paths, the same ONNX Runtime, the same
    command. ONNX Runtime's own files differed there: its resolver's layout follows addresses that
    the length of the install's path moves, even with address-space randomisation off (two paths
    wrote the same file about one time in six: four copies make that chance negligible). The
    canonical rewrite writes one file."""
    folders = ["a/mnc-x", "bb/other/mnc-y", "c" * 60 + "/mnc-z", "d" * 40 + "/" + "e" * 90 + "/mnc-w"]
    argv = ["compile", "specs/v1.mnet", "--alpha", "0.25", "--resolution", "128", "--target", "ort", "-o", "out"]
    written = []
    for folder in folders:
        copy = _copy_of_mnc(tmp_path / folder)
        env = {**os.environ, "PYTHONPATH": str(copy)}
        done = subprocess.run([sys.executable, "-m", "mnc", *argv], cwd=copy, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        written.append((copy / "out" / "v1_0.25_128.ort").read_bytes())
    assert all(data == written[0] for data in written[1:]), [hashlib.sha256(d).hexdigest()[:12] for d in written]


def test_the_canonical_rewrite_is_idempotent_and_runs_as_onnx_runtimes_file(tmp_path):
    """The rewrite changes the layout and the order of what ONNX Runtime loads into maps, nothing
    else: the same tables, the same outputs bit for bit, the same constants and metadata."""
    for name, quantization in (("fp32", None), ("int8", Quantization("synthetic", samples=4))):
        built = compile_spec(
            SPECS / "v1.mnet",
            target="onnx",
            alpha=0.25,
            resolution=32,
            quantization=quantization,
            out_dir=tmp_path / name,
        )
        as_written = ort_target.converted_by_onnx_runtime(built.artifact)
        canonical = ort_canonical.canonical(as_written)
        assert canonical != as_written
        assert ort_canonical.canonical(canonical) == canonical
        assert ort_canonical.read(canonical) == ort_canonical.canonical_tree(ort_canonical.read(as_written))
        resolver = ort_canonical.read(canonical)["kernel_type_str_resolver"]["op_kernel_type_str_args"]
        assert [e["op_id"] for e in resolver] == sorted(e["op_id"] for e in resolver)
        paths = tmp_path / f"{name}_as_written.ort", tmp_path / f"{name}_canonical.ort"
        paths[0].write_bytes(as_written)
        paths[1].write_bytes(canonical)
        x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
        outputs = [run_ort(p, {"input": x}) for p in paths]
        assert all(np.array_equal(u, v) for u, v in zip(*outputs))
        constants = [ort_target.TARGET.constants(p) for p in paths]
        assert constants[0].keys() == constants[1].keys()
        assert all(np.array_equal(constants[0][k], constants[1][k]) for k in constants[0])
        assert ort_target.TARGET.read_metadata(paths[0]) == ort_target.TARGET.read_metadata(paths[1])
        assert main(["verify", str(paths[1])]) == 0


def test_a_file_with_fields_mnc_does_not_know_is_kept_as_written_and_reported(tmp_path, monkeypatch):
    """Another ONNX Runtime may write a field this schema lacks: the rewrite would lose it, so the
    file stays as ONNX Runtime wrote it and the report says its bytes may vary."""
    schema = ort_canonical.SCHEMA["InferenceSession"]
    monkeypatch.setitem(ort_canonical.SCHEMA, "InferenceSession", schema[:2])  # as if it had no resolver
    result = compile_spec(SPECS / "v1.mnet", target="ort", alpha=0.25, resolution=32, out_dir=tmp_path)
    assert result.typed.verification.passed
    section = result.typed.target_section
    assert section["reproducible_bytes"] is False
    assert section["reproducibility"].startswith("no: this ONNX Runtime's file cannot be rewritten canonically")
    assert "InferenceSession has a field (slot 3)" in section["reproducibility"]
    with pytest.raises(ort_canonical.NotCanonical):
        ort_canonical.canonical(result.artifact.read_bytes())


def test_image_input_is_refused_for_ort_and_nothing_is_written(tmp_path, capsys):
    argv = ["compile", str(SPECS / "v1.mnet"), "--target", "ort", "--image-input", "-o", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "--image-input: only for --target coreml/ncnn/onnx/tflite" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("saturating", [True, False])
def test_the_report_says_when_this_hosts_int8_kernels_saturate(tmp_path, monkeypatch, saturating):
    """On an x86 host without VNNI the .ort's whole-network int8 figures are that host's saturating
    kernels'; the report and the terminal say so there, and the verdict is the same on every host."""
    monkeypatch.setattr(ort_target, "saturating_int8_x86", lambda: saturating)
    result = compile_spec(
        SPECS / "v1.mnet",
        target="ort",
        alpha=0.25,
        resolution=32,
        quantization=Quantization("synthetic", samples=4),
        out_dir=tmp_path,
    )
    verification = result.report["verification"]
    assert verification["verdict"] == "pass"
    assert ("host_int8_kernels" in verification) == saturating
    if saturating:
        assert verification["host_int8_kernels"]["saturating"] is True
        assert "whole-network figures are this host's" in verification["host_int8_kernels"]["note"]


def test_a_table_whose_vtable_lies_outside_the_file_is_refused(tmp_path):
    """A position before the file's start must not be read from its end (struct counts negative
    positions from the end): the rewrite refuses such a file."""
    result = compile_spec(SPECS / "v1.mnet", target="ort", alpha=0.25, resolution=32, out_dir=tmp_path)
    data = bytearray(result.artifact.read_bytes())
    root = struct.unpack_from("<I", data, 0)[0]
    struct.pack_into("<i", data, root, struct.unpack_from("<i", data, root)[0] + len(data))
    with pytest.raises(ort_canonical.NotCanonical, match="vtable outside the file"):
        ort_canonical.canonical(bytes(data))
