"""ONNX Runtime Mobile's accelerators take only fixed shapes: the .ort's batch is fixed (1 by default,
`--batch N`), recorded, and every verification sample run, one batch at a time."""

import numpy as np
import onnxruntime as ort
import pytest
from conftest import SPECS

from mnc.backends import TARGETS
from mnc.backends.target import TargetOptions
from mnc.cli import main
from mnc.pipeline import compile_spec
from mnc.pipeline.request import Quantization


def _input_shape(path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.get_inputs()[0].shape, [o.shape for o in session.get_outputs()]


def test_the_ort_batch_is_fixed_recorded_and_every_sample_verified(tmp_path):
    """Batch 1 by default; --batch 3 takes the verification's 2 float samples in one padded run and its
    16 int8 samples in six, the layer check's twin with the artifact's batch."""
    spec = SPECS / "v3_small.mnet"
    common = dict(target="ort", alpha=0.35, resolution=32)
    one = compile_spec(spec, out_dir=tmp_path / "one", **common)
    assert _input_shape(one.artifact) == ([1, 3, 32, 32], [[1, 1000]])
    assert one.typed.target_section["batch"] == 1
    assert one.report["artifact"]["input"]["shape"] == [1, 3, 32, 32]
    assert TARGETS["ort"].read_metadata(one.artifact)["mnc.batch"] == "1"
    three = compile_spec(spec, out_dir=tmp_path / "three", options=TargetOptions(batch="3"), **common)
    assert three.typed.verification.passed and three.typed.target_section["batch"] == 3
    assert _input_shape(three.artifact) == ([3, 3, 32, 32], [[3, 1000]])
    q = compile_spec(
        spec,
        out_dir=tmp_path / "q",
        options=TargetOptions(batch="3"),
        quantization=Quantization("synthetic", samples=4),
        **common,
    )
    assert q.typed.verification.passed and q.typed.verification.check("layers").section["max_lsb"] <= 1
    assert _input_shape(q.artifact)[0] == [3, 3, 32, 32]
    assert main(["verify", str(q.artifact)]) == 0
    # The same network at batch 1 and 3 computes the same outputs.
    from mnc.backends.ort import run_ort

    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    (y1,), (y3,) = run_ort(one.artifact, {"input": x}), run_ort(three.artifact, {"input": x})
    assert y1.shape == y3.shape == (5, 1000)
    np.testing.assert_allclose(y1, y3, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_batch_that_is_not_a_count_is_refused(tmp_path, capsys, value):
    argv = ["compile", str(SPECS / "v1.mnet"), "--target", "ort", "-o", str(tmp_path / "out"), f"--batch={value}"]
    assert main(argv) == 2
    assert f"--batch {value}: a whole number of samples (1 or more), or dynamic" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_batch_is_for_onnx_and_ort_only(tmp_path, capsys):
    argv = ["compile", str(SPECS / "v1.mnet"), "--target", "tflite", "--batch", "1", "-o", str(tmp_path)]
    assert main(argv) == 2
    assert "--batch: only for --target onnx/ort" in capsys.readouterr().err
