"""Weights matched in order of computation (issue 22): checkpoints whose names no layout knows (the
`in_order` fallback), and timm's GhostNet and MobileNetV4 through the timm layout, whose blocks' modules
are matched with the spec's layers by kind, shape and the network's dependencies (a shortcut after the
main path). Fixtures made by timm and torchvision themselves (tools/make_in_order_fixtures.py): the
state dicts and the framework's outputs on seeded inputs."""

import numpy as np
import pytest
from conftest import ROOT, SPECS

import mnc
from mnc.backends.onnx import run_onnx
from mnc.cli import main

FIXTURES = ROOT / "tests" / "fixtures" / "in_order"
EXAMPLES = ROOT / "examples" / "specs"
CASES = [  # the checkpoint, the spec, α, the layout no name chose (or timm's), the framework's parameter count
    ("mobilenet_v2_035_renamed.pth", SPECS / "v2.mnet", 0.35, "in_order", 402_533),
    ("ghostnet_050.npz", EXAMPLES / "ghostnet.mnet", 0.5, "timm", 1_312_697),
    ("mobilenetv4_conv_small_050.npz", EXAMPLES / "mobilenet_v4_conv_small.mnet", 0.5, "timm", 964_357),
]


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _io(checkpoint: str):
    data = np.load(FIXTURES / f"{checkpoint.rsplit('.', 1)[0]}_io.npz")
    return data["input"], data["output"]


@pytest.mark.parametrize("checkpoint,spec,alpha,layout,params", CASES, ids=[c[0] for c in CASES])
def test_a_checkpoint_computes_what_its_framework_computed(tmp_path, capsys, checkpoint, spec, alpha, layout, params):
    x, expected = _io(checkpoint)
    assert np.abs(expected - expected.mean(axis=0)).max() > 0.1  # the outputs depend on the input
    argv = ["compile", str(spec), "--alpha", str(alpha), "--resolution", "64", "--target", "onnx", "-o", str(tmp_path)]
    assert _run([*argv, "--weights", str(FIXTURES / checkpoint)]) == 0
    out = capsys.readouterr().out
    how = "matched in order of computation" if layout == "in_order" else f"layout '{layout}'"
    assert f"weights: {FIXTURES / checkpoint} ({how})" in out, out
    (artifact,) = tmp_path.glob("*.onnx")
    report = mnc.compile(spec, alpha=alpha, resolution=64, weights=FIXTURES / checkpoint, out_dir=tmp_path / "api")
    assert report.report["weights"]["layout"] == layout and report.report["params"] == params
    (y,) = run_onnx(artifact, {"input": x})
    np.testing.assert_allclose(y.reshape(expected.shape), expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def _renamed() -> dict:
    from mnc.weights.files import read_weights

    return read_weights(FIXTURES / "mobilenet_v2_035_renamed.pth").tensors


def _compile_v2(tmp_path, tensors: dict, capsys, spec=SPECS / "v2.mnet") -> tuple[int, str]:
    path = tmp_path / "edited.npz"
    np.savez(path, **tensors)  # in the dict's order, as torch.save keeps a state dict's
    argv = ["compile", str(spec), "--alpha", "0.35", "--resolution", "64", "--target", "onnx"]
    code = _run([*argv, "-o", str(tmp_path / "out"), "--weights", str(path)])
    return code, capsys.readouterr().err


def test_a_tensor_of_another_shape_is_named_with_the_layer_it_was_matched_against(tmp_path, capsys):
    tensors = _renamed()
    tensors["_blocks.3._depthwise_conv.weight"] = np.zeros((96, 1, 5, 5), np.float32)
    code, err = _compile_v2(tmp_path, tensors, capsys)
    assert code == 2 and not (tmp_path / "out").exists()
    assert "v2.mnet:30:20: error: the checkpoint's modules, matched in order of computation: module " in err, err
    assert "'_blocks.3._depthwise_conv' (weight [96, 1, 5, 5]), after '_blocks.3._bn0' does not fit" in err
    assert "the network's next layer 'stage3.block0.dw' (conv: weight [48, 1, 3, 3])" in err


def test_a_missing_layer_is_named_with_both_sides(tmp_path, capsys):
    tensors = {k: v for k, v in _renamed().items() if not k.startswith("_blocks.5._bn1.")}
    code, err = _compile_v2(tmp_path, tensors, capsys)
    assert code == 2
    assert "module '_blocks.5._project_conv' (weight [16, 96, 1, 1]), after '_blocks.5._depthwise_conv'" in err, err
    assert "does not fit the network's next layer 'stage3.block2.dw.bn' (batchnorm: gamma [96]" in err
    tensors = {k: v for k, v in _renamed().items() if not k.startswith("_fc.")}
    code, err = _compile_v2(tmp_path, tensors, capsys)
    assert code == 2
    assert "the checkpoint ends where this network still has layer 'stage10.block0.fc' (fc: weight [1000, 1280]" in err
    assert "(its last module is '_bn1' (" in err


def test_equal_shapes_in_parallel_branches_are_an_error_not_a_guess(tmp_path, capsys):
    spec = tmp_path / "twins.mnet"
    spec.write_text(
        "name = twins\ninput_channels = 3\nbase_resolution = 32\nclasses = 4\nactivation = relu\n"
        "width_rounding = make_divisible(divisor=8)\npadding = symmetric\n\n"
        "block twin(c: channels)\n    left  = conv(3, c, from=input)\n    right = conv(3, c, from=input)\n"
        "    join  = concat(left, right)\nend\n\n"
        "| input    | operator       | c | s |\n|----------|----------------|---|---|\n"
        "| 32² × 3  | conv2d 3x3     | 8 | 2 |\n| 16² × 8  | twin           | 8 | - |\n"
        "| 16² × 16 | avgpool global | - | - |\n| 1² × 16  | fc             | k | - |\n"
    )
    rng = np.random.default_rng(0)

    def conv_bn(name: str, shape: tuple) -> dict:
        c = shape[0]
        bn = {"weight": np.ones(c), "bias": np.zeros(c), "running_mean": np.zeros(c), "running_var": np.ones(c)}
        return {f"{name}.weight": rng.normal(size=shape), **{f"{name}_bn.{k}": v for k, v in bn.items()}}

    tensors = {**conv_bn("stem", (8, 3, 3, 3)), **conv_bn("a", (8, 8, 3, 3)), **conv_bn("b", (8, 8, 3, 3))}
    tensors.update({"fc.weight": rng.normal(size=(4, 16)), "fc.bias": np.zeros(4)})
    path = tmp_path / "twins.npz"
    np.savez(path, **{k: v.astype(np.float32) for k, v in tensors.items()})
    assert _run(["compile", str(spec), "--target", "onnx", "-o", str(tmp_path / "out"), "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert "twins.mnet:18:14: error: the checkpoint's modules, matched in order of computation: module 'a' " in err, err
    assert "fits both layer 'stage1.block0.left' and layer 'stage1.block0.right'" in err
    assert "the shapes cannot tell which is which" in err


def test_a_prefix_every_name_shares_is_taken_off(tmp_path, capsys):
    from mnc.weights.files import read_weights

    torchvision = read_weights(ROOT / "tests" / "fixtures" / "torchvision" / "mobilenet_v2_w0.35.safetensors")
    path = tmp_path / "wrapped.npz"
    np.savez(path, **{f"module.{k}": v for k, v in torchvision.tensors.items()})
    result = mnc.compile(SPECS / "v2.mnet", alpha=0.35, resolution=64, weights=path, out_dir=tmp_path / "a")
    assert result.report["weights"]["layout"] == "torchvision_mobilenet_v2"
    renamed = tmp_path / "renamed.npz"
    np.savez(renamed, **{f"model.{k}": v for k, v in _renamed().items()})
    result = mnc.compile(SPECS / "v2.mnet", alpha=0.35, resolution=64, weights=renamed, out_dir=tmp_path / "b")
    assert result.report["weights"]["layout"] == "in_order"


@pytest.mark.parametrize("setting,value", [("padding", "same"), ("batchnorm_eps", "0.001")])
def test_a_convention_of_the_weights_never_replaces_what_the_spec_states(tmp_path, capsys, setting, value):
    from conftest import replace_line

    text = (EXAMPLES / "ghostnet.mnet").read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith(setting))
    spec = tmp_path / "ghostnet.mnet"
    spec.write_text(replace_line(text, line, f"{setting:<16}= {value}"))
    argv = ["compile", str(spec), "--alpha", "0.5", "--resolution", "64", "--target", "onnx", "-o", str(tmp_path)]
    assert _run([*argv, "--weights", str(FIXTURES / "ghostnet_050.npz")]) == 2
    err = capsys.readouterr().err
    theirs = "symmetric" if setting == "padding" else "1e-05"
    assert f"ghostnet.mnet:{line}:19: error: the spec states {setting} = {value.replace('0.001', '0.001')} here" in err
    assert f"the weights' framework computes with {setting} = {theirs} (from the 'timm' layout)" in err, err


def test_mnc_import_prints_a_command_that_compiles(tmp_path, capsys, monkeypatch):
    import shlex

    out = tmp_path / "a folder"
    weights = ROOT / "tests" / "fixtures" / "timm" / "mobilenetv2_050.safetensors"
    assert _run(["import", str(weights), "-o", str(out)]) == 0
    command = capsys.readouterr().out.splitlines()[-1].split("compile it: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["mnc", "compile"]
    monkeypatch.chdir(tmp_path)
    assert _run([*argv[1:], "--resolution", "64"]) == 0
    # Weights under names it cannot import: it says to give them to mnc compile, which takes them.
    assert _run(["import", str(FIXTURES / "mobilenet_v2_035_renamed.pth"), "-o", str(out)]) == 2
    assert "give them to mnc compile with --weights and the spec they fit" in capsys.readouterr().err


def test_a_renamed_checkpoint_on_tflite(tmp_path):
    from mnc.backends.tflite import run_litert

    x, expected = _io("mobilenet_v2_035_renamed.pth")
    weights = FIXTURES / "mobilenet_v2_035_renamed.pth"
    result = mnc.compile(
        SPECS / "v2.mnet", target="tflite", alpha=0.35, resolution=64, weights=weights, out_dir=tmp_path
    )
    assert result.report["weights"]["layout"] == "in_order"
    (y,) = run_litert(result.artifact, {"input": x})
    np.testing.assert_allclose(y.reshape(expected.shape), expected, atol=1e-4 * np.abs(expected).max(), rtol=0)
