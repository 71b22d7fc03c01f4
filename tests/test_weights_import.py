"""Trained weights in: parity with torchvision, and a located error for every way a checkpoint can be wrong."""

import json
import os
import pickle

import numpy as np
import onnx
import pytest
from conftest import ROOT, SPECS
from safetensors.numpy import load_file, save_file

from mnc.backends.onnx import run_onnx
from mnc.cli import main
from mnc.errors import InputError
from mnc.pipeline import build, compile_spec

FIXTURES = ROOT / "tests" / "fixtures" / "torchvision"


def checkpoint(width):
    return FIXTURES / f"mobilenet_v2_w{width}.safetensors"


@pytest.mark.parametrize("width", [0.35, 0.5, 1.0])
@pytest.mark.parametrize("resolution", [64, 96])
def test_compiled_onnx_matches_torchvision(tmp_path, width, resolution):
    result = compile_spec(
        SPECS / "v2.mnet", alpha=width, resolution=resolution, weights=checkpoint(width), out_dir=tmp_path
    )
    assert result.typed.classes == 10  # taken from the checkpoint's classifier
    assert result.typed.weights.layout == "torchvision_mobilenet_v2"
    io = load_file(FIXTURES / f"mobilenet_v2_w{width}_r{resolution}.safetensors")
    (y,) = run_onnx(result.artifact.read_bytes(), {"input": io["input"]})
    expected = io["output"]
    assert np.abs(y - expected).max() <= 1e-4 * np.abs(expected).max()
    assert (y.argmax(1) == expected.argmax(1)).all()


def _errors(**kwargs):
    with pytest.raises(InputError) as info:
        build(SPECS / "v2.mnet", resolution=64, **kwargs)
    return info.value


def _edited(tmp_path, width=0.35, drop=(), add=None, change=None):
    tensors = load_file(checkpoint(width))
    for key in drop:
        del tensors[key]
    tensors.update(add or {})
    tensors.update(change or {})
    path = tmp_path / "edited.safetensors"
    save_file(tensors, path)
    return path


def test_checkpoint_of_another_width_names_tensor_shapes_layer_line_and_the_width_it_fits():
    exc = _errors(alpha=0.35, weights=checkpoint(0.5))
    first = exc.diagnostics[0]
    # Stage 2 projects to make_divisible(24·0.5) = 16 channels in the checkpoint, 8 at α = 0.35.
    assert first.message.endswith(
        "tensor 'features.2.conv.2.weight' has shape [16, 48, 1, 1] but layer "
        "'stage2.block0.project' (conv weight) needs [8, 48, 1, 1]"
    )
    assert first.loc.path.endswith("v2.mnet") and first.loc.line == 29  # the row `| 112² × 16 | bottleneck …`
    notes = [text for text, _ in first.notes]
    # To a Python caller, in its keyword arguments (the command line says --alpha 0.5: see below).
    assert "these weights fit α = 0.5, and this compile uses α = 0.35; pass alpha=0.5" in notes


def test_class_count_comes_from_the_classifier_unless_given(tmp_path):
    assert build(SPECS / "v2.mnet", alpha=0.35, resolution=64, weights=checkpoint(0.35)).config.classes == 10
    exc = _errors(alpha=0.35, classes=12, weights=checkpoint(0.35))
    assert any(
        "tensor 'classifier.1.weight' has shape [10, 1280] but layer 'stage10.block0.fc' (fc weight) "
        "needs [12, 1280]" in d.message
        for d in exc.diagnostics
    )


def test_missing_tensor(tmp_path):
    path = _edited(tmp_path, drop=["features.4.conv.1.0.weight"])
    (d,) = _errors(alpha=0.35, weights=path).diagnostics
    assert d.message == (
        f"{path}: no tensor 'features.4.conv.1.0.weight' for layer 'stage3.block0.dw' "
        "(conv weight), shape [48, 1, 3, 3]"
    )
    assert d.loc.line > 0  # the spec row of the layer


def test_unexpected_tensor(tmp_path):
    path = _edited(tmp_path, add={"features.19.0.weight": np.zeros((4, 4, 1, 1), np.float32)})
    (d,) = _errors(alpha=0.35, weights=path).diagnostics
    assert (
        "1 tensor(s) the network has no place for (layout 'torchvision_mobilenet_v2'): "
        "'features.19.0.weight' [4, 4, 1, 1]" in d.message
    )
    assert str(d.loc) == str(path)


@pytest.mark.parametrize(
    "value,message",
    [
        (np.full((16,), np.nan, np.float32), "tensor 'features.0.1.running_var' has 16 NaN or infinite value(s)"),
        (np.ones((16,), np.int32), "tensor 'features.0.1.running_var' has dtype int32; weights must be floating point"),
    ],
)
def test_bad_values(tmp_path, value, message):
    path = _edited(tmp_path, change={"features.0.1.running_var": value})
    assert message in _errors(alpha=0.35, weights=path).render()


def test_unreadable_and_unknown_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    assert "not a readable safetensors file" in _errors(weights=junk).render()
    other = tmp_path / "weights.ckpt"
    other.write_bytes(b"x")
    assert "unknown weights format '.ckpt'" in _errors(weights=other).render()
    assert "cannot read weights" in _errors(weights=tmp_path / "absent.safetensors").render()
    names = tmp_path / "names.npz"
    np.savez(names, **{"conv_a": np.zeros(3, np.float32)})
    assert "cannot tell the layout of these weights (tensors such as conv_a)" in _errors(weights=names).render()
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, obj=np.array([{"a": 1}], dtype=object))
    assert "not a readable .npz archive" in _errors(weights=pickled).render()


def test_npz_checkpoints_load(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **load_file(checkpoint(0.35)))
    built = build(SPECS / "v2.mnet", alpha=0.35, resolution=64, weights=path)
    assert built.weights["layout"] == "torchvision_mobilenet_v2"


def test_layout_can_be_chosen_and_a_wrong_choice_is_explained():
    assert (
        "unknown layout 'torchvision_mobilenetv2'; did you mean 'torchvision_mobilenet_v2'?"
        in _errors(alpha=0.35, weights=checkpoint(0.35), weights_layout="torchvision_mobilenetv2").render()
    )
    assert (
        "tensor(s) the network has no place for (layout 'mnc')"
        in _errors(alpha=0.35, weights=checkpoint(0.35), weights_layout="mnc").render()
    )


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pt = tmp_path / "model.pt"
    pt.write_bytes(pickle.dumps({"weight": _Boom()}))
    text = _errors(weights=pt).render()
    assert "cannot read PyTorch checkpoint" in text and "posix.system" in text and "not read" in text
    assert not (tmp_path / "pwned").exists()
    pt.write_bytes(b"whatever")
    assert "cannot read PyTorch checkpoint: not a readable PyTorch checkpoint" in _errors(weights=pt).render()


def test_saved_weights_reload_to_the_same_model(tmp_path):
    first = compile_spec(
        SPECS / "v2.mnet",
        alpha=0.35,
        resolution=64,
        weights=checkpoint(0.35),
        save_weights=tmp_path / "mine.safetensors",
        out_dir=tmp_path / "a",
    )
    assert first.typed.weights.saved_to.endswith("mine.safetensors")
    again = compile_spec(
        SPECS / "v2.mnet", alpha=0.35, resolution=64, weights=tmp_path / "mine.safetensors", out_dir=tmp_path / "b"
    )
    assert again.typed.weights.layout == "mnc" and again.typed.classes == 10
    a, b = (onnx.load(str(r.artifact)) for r in (first, again))
    assert {i.name: i.raw_data for i in a.graph.initializer} == {i.name: i.raw_data for i in b.graph.initializer}
    saved = load_file(tmp_path / "mine.safetensors")
    assert "stage3.block0.dw.bn.var" in saved and "stage10.block0.fc.weight" in saved


def test_cli_weights_errors_exit_2_and_write_nothing(tmp_path, capsys):
    code = main(
        [
            "compile",
            str(SPECS / "v2.mnet"),
            "--alpha",
            "0.35",
            "--resolution",
            "64",
            "--target",
            "onnx",
            "-o",
            str(tmp_path / "out"),
            "--weights",
            str(checkpoint(1.0)),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "v2.mnet:" in err and "has shape" in err and "pass --alpha 1" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_verify_needs_the_same_weights(tmp_path, capsys):
    assert (
        main(
            [
                "compile",
                str(SPECS / "v2.mnet"),
                "--alpha",
                "0.5",
                "--resolution",
                "64",
                "--target",
                "onnx",
                "-o",
                str(tmp_path),
                "--weights",
                str(checkpoint(0.5)),
            ]
        )
        == 0
    )
    artifact = str(tmp_path / "v2_0.5_64.onnx")
    capsys.readouterr()
    assert main(["verify", artifact]) == 2
    assert "was built from a weights file" in capsys.readouterr().err
    assert main(["verify", artifact, "--weights", str(checkpoint(0.5)), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"]["layout"] == "torchvision_mobilenet_v2"
    other = _edited(tmp_path, width=0.5, change={"features.0.1.bias": np.zeros(16, np.float32)})
    assert main(["verify", artifact, "--weights", str(other)]) == 3
