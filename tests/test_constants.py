"""Weights are verified, not only outputs: corruptions smaller than any output tolerance — the low
bytes of fp16 weights, a 0.1 % scale on 1 % of an initialiser — fail `mnc verify` naming the constant."""

import onnx
import pytest
from conftest import SPECS
from onnx import numpy_helper

from mnc.cli import main
from mnc.pipeline import Quantization, TargetOptions, compile_spec


def test_low_bytes_of_fp16_weights_in_a_core_ml_weight_file(tmp_path, capsys):
    result = compile_spec(SPECS / "v1.mnet", target="coreml", alpha=0.5, resolution=96, out_dir=tmp_path)
    assert result.typed.verification.constants.passed
    weights = result.artifact / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights.read_bytes())
    # Flip the low byte of 1,024 fp16 values in the middle of the file (a change below fp16's own noise).
    start = len(data) // 2 & ~1
    for i in range(1024):
        data[start + 2 * i] ^= 0x01
    weights.write_bytes(bytes(data))
    assert main(["verify", str(result.artifact)]) == 3
    err = capsys.readouterr().err
    assert "constant '" in err and "differs from the spec's weights" in err


def test_an_onnx_initialiser_scaled_on_one_percent_of_its_values(tmp_path, capsys):
    result = compile_spec(SPECS / "v2.mnet", alpha=0.35, resolution=64, out_dir=tmp_path)
    model = onnx.load(str(result.artifact))
    (tensor,) = [t for t in model.graph.initializer if t.name == "stage5.block0.expand.weight"]
    values = numpy_helper.to_array(tensor).copy()
    flat = values.reshape(-1)
    flat[::100] *= 1.001
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    assert main(["verify", str(broken)]) == 3
    err = capsys.readouterr().err
    assert "constant 'stage5.block0.expand.weight' differs from the spec's weights in" in err


@pytest.mark.parametrize(
    "target,options",
    [("tflite", {"precision": "fp16"}), ("coreml", {"deployment_target": "iOS16"}), ("onnx", {}), ("tflite", {})],
)
def test_int8_and_fp16_constants_are_checked_on_every_target(tmp_path, target, options):
    quantization = None if options.get("precision") == "fp16" else Quantization("synthetic", samples=8)
    result = compile_spec(
        SPECS / "v2.mnet",
        target=target,
        alpha=0.35,
        resolution=32,
        out_dir=tmp_path,
        quantization=quantization,
        options=TargetOptions(**options),
    )
    constants = result.typed.verification.constants
    assert constants.passed and constants.checked - constants.folded >= 100
    assert main(["verify", str(result.artifact)]) == 0


@pytest.mark.parametrize("target", ["coreml", "tflite"])
def test_a_pass_that_changes_the_network_fails_fp16_verification(tmp_path, monkeypatch, capsys, target):
    """fp16 artifacts are checked against the IR they were emitted from; that IR must itself still
    compute the spec's network, or a wrong optimisation pass would go unseen."""
    import mnc.pipeline.compile as compile_module

    real = compile_module.run_pipeline

    def wrong_pass(graph, passes, **kwargs):
        optimised, records = real(graph, passes, **kwargs)
        node = optimised.node("stage3.block0.pw")
        node.params = {**node.params, "weight": node.params["weight"] * 2}
        return optimised, records

    monkeypatch.setattr(compile_module, "run_pipeline", wrong_pass)
    argv = ["compile", str(SPECS / "v1.mnet"), "--alpha", "0.25", "--resolution", "64", "--target", target]
    assert main([*argv, "--precision", "fp16", "-o", str(tmp_path)]) == 3
    assert "an optimisation pass changed what it computes" in capsys.readouterr().err
