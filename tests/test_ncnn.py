"""ncnn: every bundled spec written as .param/.bin and verified in ncnn's own runtime, the format's
details (a Split where a blob has two readers, weights tagged float32), faults `mnc verify` must
catch, and what the target refuses. Parity with torchvision and timm on ncnn is in test_dense.py
and test_timm.py."""

import shutil

import numpy as np
import pytest
from conftest import ROOT, SPECS

from mnc.backends import ncnn as ncnn_backend
from mnc.cli import main
from mnc.pipeline import TargetOptions, compile_spec

EXAMPLES = ROOT / "examples" / "specs"


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.mnet")))
def test_every_bundled_spec_verifies_in_ncnn(tmp_path, spec):
    result = compile_spec(SPECS / spec, target="ncnn", alpha=0.5, resolution=96, out_dir=tmp_path)
    v = result.typed.verification
    (run,) = v.runs
    assert v.passed and run.executor == ncnn_backend.RUNTIME
    assert run.exceedance <= 1 and run.comparison.cosine > 0.99999
    assert v.constants.checked > 10 and not v.constants.mismatches
    assert sorted(p.name for p in result.artifact.iterdir()) == ["mnc.json", "model.ncnn.bin", "model.ncnn.param"]


@pytest.fixture(scope="module")
def v2_network(tmp_path_factory):
    out = tmp_path_factory.mktemp("ncnn")
    argv = ["compile", str(SPECS / "v2.mnet"), "--alpha", "0.35", "--resolution", "64", "--target", "ncnn"]
    assert main([*argv, "-o", str(out)]) == 0
    return out / "v2_0.35_64.ncnn"


def test_a_blob_with_two_readers_is_split_and_weights_are_tagged_float32(v2_network):
    layers = ncnn_backend.read_layers(v2_network)
    lines = (v2_network / "model.ncnn.param").read_text().splitlines()
    assert lines[0] == "7767517" and lines[1].split() == [str(len(layers)), str(len(_blobs(lines[2:])))]
    # Each blob is read by one layer: a residual block's input goes through a Split.
    readers = [blob for line in lines[2:] for blob in line.split()[4 : 4 + int(line.split()[2])]]
    assert len(readers) == len(set(readers)) and any(t == "Split" for t, _, _ in layers)
    # A 1×1 convolution's weights: the float32 tag, then its out × in values, then the bias.
    data = (v2_network / "model.ncnn.bin").read_bytes()
    assert int.from_bytes(data[:4], "little") == ncnn_backend.FP32_TAG
    conv = next(p for t, n, p in layers if t == "Convolution")
    assert int(conv[6]) == 16 * 3 * 3 * 3 and int(conv[5]) == 1  # the stem: 16 3×3 filters of 3 channels, a bias


def _blobs(lines):
    return {
        b
        for line in lines
        for b in line.split()[4 + int(line.split()[2]) : 4 + int(line.split()[2]) + int(line.split()[3])]
    }


def test_builds_are_reproducible(tmp_path):
    digests = [
        compile_spec(SPECS / "v3_small.mnet", target="ncnn", alpha=0.5, resolution=64, out_dir=tmp_path / d).typed
        for d in ("a", "b")
    ]
    assert digests[0].artifact.sha256 == digests[1].artifact.sha256


def test_a_changed_weight_fails_verification(v2_network, tmp_path, capsys):
    bad = tmp_path / v2_network.name
    shutil.copytree(v2_network, bad)
    data = bytearray((bad / "model.ncnn.bin").read_bytes())
    offset = 4 + 4 * 100  # a weight of the stem, after its tag
    value = np.frombuffer(data, "<f4", 1, offset)
    data[offset : offset + 4] = (value * 1.5 + 0.5).astype("<f4").tobytes()
    (bad / "model.ncnn.bin").write_bytes(bytes(data))
    assert main(["verify", str(bad)]) == 3
    assert "constant 'stage0.block0.conv.weight' differs from the spec's weights in 1 of 432" in capsys.readouterr().err


def test_a_truncated_weight_file_fails_verification(v2_network, tmp_path, capsys):
    bad = tmp_path / v2_network.name
    shutil.copytree(v2_network, bad)
    (bad / "model.ncnn.bin").write_bytes((bad / "model.ncnn.bin").read_bytes()[:-100])
    assert main(["verify", str(bad)]) == 3
    err = capsys.readouterr().err
    assert "ncnn could not load the network's weights" in err and "is missing from the artifact" in err


def test_a_folder_without_a_network_is_bad_input(tmp_path, capsys):
    (tmp_path / "empty.ncnn").mkdir()
    assert main(["verify", str(tmp_path / "empty.ncnn")]) == 2
    assert "is not a readable ncnn network written by mnc" in capsys.readouterr().err


def test_fp16_stores_half_precision_weights_and_verifies(tmp_path):
    fp32, fp16 = (
        compile_spec(
            SPECS / "v2.mnet",
            target="ncnn",
            alpha=0.5,
            resolution=64,
            options=TargetOptions(precision=p),
            out_dir=tmp_path / p,
        )
        for p in ("fp32", "fp16")
    )
    assert fp16.typed.verification.passed and fp16.typed.verification.fp16_weights_only
    sizes = [(r.artifact / "model.ncnn.bin").stat().st_size for r in (fp32, fp16)]
    assert 0.5 < sizes[1] / sizes[0] < 0.53  # biases stay float32
    stored = ncnn_backend.read_constants(fp16.artifact)["stage0.block0.conv.weight"]
    exact = ncnn_backend.read_constants(fp32.artifact)["stage0.block0.conv.weight"]
    assert np.array_equal(stored, exact.astype(np.float16).astype(np.float32)) and not np.array_equal(stored, exact)


def test_image_input_takes_pixels_and_normalises_them_inside(tmp_path):
    result = compile_spec(
        SPECS / "v1.mnet",
        target="ncnn",
        alpha=0.25,
        resolution=64,
        options=TargetOptions(image_input=True),
        out_dir=tmp_path,
    )
    assert result.typed.verification.passed and "8-bit pixels" in result.typed.verification.inputs
    layers = ncnn_backend.read_layers(result.artifact)
    assert [t for t, _, _ in layers[:2]] == ["Input", "Scale"]
    assert main(["verify", str(result.artifact)]) == 0  # fed pixels again, from the record


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--quantize", "int8", "--calib", "synthetic"], "--quantize int8 is not available for --target ncnn"),
        (["--precision", "fp8"], "--precision fp8: choose one of fp32, fp16"),
        (["--labels", "labels.txt"], "--labels: only for --target coreml/tflite"),
    ],
)
def test_what_ncnn_does_not_take_is_refused(tmp_path, capsys, flags, message):
    argv = ["compile", str(SPECS / "v1.mnet"), "--alpha", "0.25", "--resolution", "64", "--target", "ncnn"]
    assert main([*argv, *flags, "-o", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_bench_times_the_network_as_an_app_runs_it(v2_network, capsys):
    assert main(["bench", str(v2_network), "--runs", "3"]) == 0
    assert "ncnn" in capsys.readouterr().out
