"""Keras models in: .keras and .h5 files read without TensorFlow, compiled with Keras's conventions,
and the artifacts' outputs against the outputs Keras computed (tests/fixtures/keras, written by
tools/make_keras_fixtures.py with TensorFlow 2.21 / Keras 3)."""

import json
import zipfile

import numpy as np
import pytest
from conftest import ROOT, SPECS, taking

import mnc
from mnc.backends.onnx import run_onnx
from mnc.backends.tflite import run_litert
from mnc.cli import main
from mnc.errors import InputError
from mnc.weights.files import read_weights

KERAS = ROOT / "tests" / "fixtures" / "keras"
V2, V1, V2_TOP = "keras_mobilenet_v2_a0.35", "keras_mobilenet_a0.25", "keras_mobilenet_v2_a0.35_top"
V3_SMALL = "keras_mobilenet_v3_small_a0.5_top"  # takes [0, 255]: its own Rescaling layer
V3_SMALL_OWN_HEAD = "keras_mobilenet_v3_small_a0.5"  # include_top=False, GAP + Dropout + Dense


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _taken(spec, weights, out):
    """The spec as a user takes Keras's conventions into it (conftest.taking)."""
    return taking(spec, out / "spec", read_weights(weights).conventions)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _keras_io(name: str):
    data = np.load(KERAS / f"{name}_io.npz")
    return data["input"], data["output"]  # NHWC in [-1, 1], Keras's softmax output


@pytest.mark.parametrize(
    "name,spec,alpha,suffix,target",
    [
        (V2, "v2.mnet", 0.35, ".keras", "onnx"),
        (V2, "v2.mnet", 0.35, ".h5", "tflite"),
        (V1, "v1.mnet", 0.25, ".keras", "tflite"),
        (V1, "v1.mnet", 0.25, ".h5", "onnx"),
        (V2_TOP, "v2.mnet", 0.35, ".keras", "onnx"),
    ],
)
def test_a_bundled_spec_with_keras_weights_computes_what_keras_computed(tmp_path, name, spec, alpha, suffix, target):
    x, expected = _keras_io(name)
    weights = KERAS / f"{name}{suffix}"
    common = {"target": target, "alpha": alpha, "resolution": x.shape[1], "weights": weights, "out_dir": tmp_path}
    # The bundled specs state settings Keras computes otherwise: V2's follows torchvision (symmetric
    # padding, ImageNet mean/std), V1's TF-slim (ReLU): refused, naming both values.
    stated = "padding = symmetric" if spec == "v2.mnet" else "activation = relu"
    with pytest.raises(InputError, match=f"the spec states {stated} here, and the weights' framework computes with"):
        mnc.compile(SPECS / spec, **common)
    result = mnc.compile(_taken(SPECS / spec, weights, tmp_path), **common)
    report = result.report
    assert report["weights"]["layout"] == "keras" and report["classes"] == expected.shape[1]
    # What the spec leaves out is Keras's, used and reported: ε (neither spec states it), mean and std (V2).
    used = {k: v["used"] for k, v in report["weights"]["conventions"].items()}
    keras = {"batchnorm_eps": 0.001, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert used == (keras if spec == "v2.mnet" else {"batchnorm_eps": 0.001})
    run = run_onnx if target == "onnx" else run_litert
    (y,) = run(result.artifact, {"input": x.transpose(0, 3, 1, 2).copy()})
    y = y.reshape(len(x), -1)
    probabilities = y if report["artifact"]["output"]["name"] == "probabilities" else _softmax(y)  # V1 ends in softmax
    assert np.abs(expected - expected.mean(axis=0)).max() > 0.05  # Keras's outputs depend on the input
    np.testing.assert_allclose(probabilities, expected, atol=2e-5, rtol=0)  # float32 both, summed differently


def test_the_artifact_takes_keras_input_as_an_image(tmp_path):
    """--image-input normalises as Keras's preprocess_input does (pixel / 127.5 − 1)."""
    x, expected = _keras_io(V2)
    pixels = np.round((x + 1) * 127.5).clip(0, 255)
    spec = _taken(SPECS / "v2.mnet", KERAS / f"{V2}.keras", tmp_path)
    result = mnc.compile(
        spec,
        target="onnx",
        alpha=0.35,
        resolution=96,
        weights=KERAS / f"{V2}.keras",
        out_dir=tmp_path,
    )
    (logits,) = run_onnx(result.artifact, {"input": (pixels / 127.5 - 1).transpose(0, 3, 1, 2).astype(np.float32)})
    image = mnc.compile(
        spec,
        target="tflite",
        alpha=0.35,
        resolution=96,
        weights=KERAS / f"{V2}.keras",
        out_dir=tmp_path / "image",
        image_input=True,
    )
    (from_pixels,) = run_litert(image.artifact, {"input": pixels.transpose(0, 3, 1, 2).astype(np.uint8)})
    np.testing.assert_allclose(from_pixels, logits, atol=1e-4 * np.abs(logits).max())


def test_keras_weights_that_do_not_fit_the_spec_are_a_located_error(tmp_path, capsys):
    spec = _taken(SPECS / "v2.mnet", KERAS / f"{V2}.keras", tmp_path / "in")
    argv = ["compile", str(spec), "--alpha", "0.35", "--target", "onnx", "-o", str(tmp_path / "out")]
    assert _run([*argv, "--weights", str(KERAS / f"{V1}.keras")]) == 2
    err = capsys.readouterr().err
    assert "v2.mnet:25:20: error: the Keras model's layers, matched in order of computation: layer 'conv1' " in err
    assert "(kernel [8, 3, 3, 3]) does not fit the network's next layer 'stage0.block0.conv' (conv: weight" in err, err
    argv[3] = "0.5"
    assert _run([*argv, "--weights", str(KERAS / f"{V2}.h5")]) == 2
    err = capsys.readouterr().err
    assert "does not fit the network's next layer" in err and "these weights fit α = 0.35" in err, err
    assert not (tmp_path / "out").exists()


def test_damaged_keras_files_are_bad_input(tmp_path, capsys):
    argv = ["compile", str(SPECS / "v2.mnet"), "--target", "onnx", "-o", str(tmp_path / "out"), "--weights"]
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes((KERAS / f"{V2}.keras").read_bytes()[:50_000])
    assert _run([*argv, str(truncated)]) == 2
    assert f"{truncated}: error: not a readable Keras model file" in capsys.readouterr().err
    no_weights = tmp_path / "config_only.keras"
    with zipfile.ZipFile(KERAS / f"{V2}.keras") as source, zipfile.ZipFile(no_weights, "w") as copy:
        copy.writestr("config.json", source.read("config.json"))
    assert _run([*argv, str(no_weights)]) == 2
    assert "not a readable Keras model file" in capsys.readouterr().err
    plain = tmp_path / "plain.h5"
    import h5py

    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    assert _run([*argv, str(plain)]) == 2
    assert "without a Keras model config" in capsys.readouterr().err
    config = json.loads(zipfile.ZipFile(KERAS / f"{V2}.keras").read("config.json"))
    assert config["class_name"] == "Functional"  # the fixture is what the reader expects
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name,suffix,family,alpha,softmax_rows",
    [
        (V2, ".keras", "MobileNetV2", 0.35, 1),
        (V1, ".h5", "MobileNet (V1)", 0.25, 1),
        (V2_TOP, ".keras", "MobileNetV2", 0.35, 1),
    ],
)
def test_import_writes_a_spec_and_weights_that_compute_what_keras_computed(
    tmp_path, capsys, name, suffix, family, alpha, softmax_rows
):
    assert _run(["import", str(KERAS / f"{name}{suffix}"), "-o", str(tmp_path), "--name", "mine"]) == 0
    assert f"(Keras {family}, α {alpha:g}," in capsys.readouterr().out
    spec, weights = tmp_path / "mine.mnet", tmp_path / "mine.safetensors"
    text = spec.read_text()
    x, expected = _keras_io(name)
    # One row per stage, as the bundled specs; the model's settings.
    assert text.count("| bottleneck ") == 7 if "V2" in family else text.count("| dwsep ") == 9
    assert f"alpha           = {alpha:g}" in text and f"resolution      = {x.shape[1]}" in text
    assert "padding         = same" in text and "batchnorm_eps   = 0.001" in text and "relu6" in text
    assert text.count("| softmax") == softmax_rows
    result = mnc.compile(spec, target="onnx", weights=weights, out_dir=tmp_path / "build")
    assert result.report["weights"]["layout"] == "mnc" and "conventions" not in result.report["weights"]
    (probabilities,) = run_onnx(result.artifact, {"input": x.transpose(0, 3, 1, 2).copy()})
    np.testing.assert_allclose(probabilities.reshape(len(x), -1), expected, atol=2e-5, rtol=0)


def _edited(tmp_path, edit, name: str = V2) -> str:
    """A copy of a fixture (the V2 one by default) whose config.json `edit` changed."""
    path = tmp_path / "edited.keras"
    with zipfile.ZipFile(KERAS / f"{name}.keras") as source, zipfile.ZipFile(path, "w") as copy:
        for item in source.namelist():
            data = source.read(item)
            if item == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            copy.writestr(item, data)
    return str(path)


def test_import_refuses_what_it_cannot_map_naming_the_layer(tmp_path, capsys):
    def lstm(config):
        config["config"]["layers"][2]["class_name"] = "LSTM"

    def tanh(config):
        config["config"]["layers"][-1]["config"]["activation"] = "tanh"

    def renamed(config):
        for layer in config["config"]["layers"][1]["config"]["layers"]:
            layer["config"]["name"] = layer["config"]["name"].replace("block", "stage")

    for edit, message in [
        (lstm, "layer 'global_average_pooling2d' (LSTM): mnc import cannot map a LSTM layer"),
        (tanh, "layer 'breeds': a classifier with activation 'tanh'"),
        (renamed, "none's layers"),
    ]:
        path = _edited(tmp_path, edit)
        assert _run(["import", path, "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{path}: error: ") and message in err, err
    assert _run(["import", str(SPECS / "v1.mnet"), "-o", str(tmp_path / "out")]) == 2
    assert "unknown weights format '.mnet'" in capsys.readouterr().err
    torchvision = ROOT / "tests" / "fixtures" / "torchvision" / "mobilenet_v2_w0.35.safetensors"
    assert _run(["import", str(torchvision), "-o", str(tmp_path / "out")]) == 2
    assert "in the 'torchvision_mobilenet_v2' layout: give them to mnc compile" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name,via", [(V3_SMALL, "bundled spec"), (V3_SMALL, "mnc import"), (V3_SMALL_OWN_HEAD, "mnc import")]
)
def test_keras_mobilenet_v3_takes_pixels_as_keras_does_and_computes_what_keras_computed(tmp_path, capsys, name, via):
    """MobileNetV3Small α 0.5, with Keras's own top or a head of one's own on the include_top=False
    backbone: the timm_v3 spec is its table (Keras, like timm, keeps the stem and head and expands
    by ratios; without Keras's top the head's 1×1 conv row goes). Its Rescaling (x / 127.5 − 1) is
    the spec's normalisation: an --image-input artifact takes the [0, 255] pixels the Keras model
    takes; a float-input artifact takes them normalised."""
    pixels, expected = _keras_io(name)
    assert pixels.max() > 2 and np.abs(expected - expected.mean(axis=0)).max() > 0.05
    if via == "mnc import":
        assert _run(["import", str(KERAS / f"{name}.keras"), "-o", str(tmp_path), "--name", "v3"]) == 0
        assert "(Keras MobileNetV3-Small, α 0.5, 96×96, 5 classes)" in capsys.readouterr().out
        text = (tmp_path / "v3.mnet").read_text()
        assert "specs/timm_v3_small.mnet" in text and "| softmax" in text and "batchnorm_eps   = 0.001" in text
        assert ("| fc, fixed" in text) == (name == V3_SMALL)
        spec, weights, common = tmp_path / "v3.mnet", tmp_path / "v3.safetensors", {}
    else:
        weights = KERAS / f"{name}.keras"
        spec = _taken(SPECS / "timm_v3_small.mnet", weights, tmp_path)
        common = {"alpha": 0.5, "resolution": 96}
    floats = mnc.compile(spec, target="onnx", weights=weights, out_dir=tmp_path / "f", **common)
    (y,) = run_onnx(floats.artifact, {"input": (pixels / 127.5 - 1).transpose(0, 3, 1, 2).astype(np.float32)})
    y = y if floats.report["artifact"]["output"]["name"] == "probabilities" else _softmax(y)
    np.testing.assert_allclose(y, expected, atol=2e-5, rtol=0)
    for target, run in (("tflite", run_litert), ("onnx", run_onnx)):
        image = mnc.compile(spec, target=target, weights=weights, out_dir=tmp_path / target, image_input=True, **common)
        (from_pixels,) = run(image.artifact, {"input": pixels.transpose(0, 3, 1, 2).astype(np.uint8)})
        if image.report["artifact"]["output"]["name"] != "probabilities":
            from_pixels = _softmax(from_pixels)
        np.testing.assert_allclose(from_pixels, expected, atol=2e-5, rtol=0)


def test_keras_mobilenet_v3_arithmetic_other_than_its_own_is_refused(tmp_path, capsys):
    def plus_two(config):
        op = next(layer for layer in config["config"]["layers"] if layer.get("module") == "keras.src.ops.numpy")
        op["inbound_nodes"][0]["args"][1] = 2.0

    def per_channel(config):
        layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Rescaling")
        layer["config"]["scale"] = [1.0 / 255] * 3

    for edit, message in [
        (plus_two, "(Add of [2.0]): mnc import maps the hard sigmoid of Keras's MobileNetV3"),
        (per_channel, "(Rescaling): mnc maps one positive scale and one offset"),
    ]:
        path = _edited(tmp_path, edit, V3_SMALL)
        assert _run(["import", path, "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{path}: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_keras_rescaling_becomes_the_specs_normalisation(tmp_path):
    """x / 255 instead of MobileNetV3's x / 127.5 − 1: mean 0 and std 1 on pixel / 255, applied and reported."""

    def to_unit(config):
        layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Rescaling")
        layer["config"]["scale"], layer["config"]["offset"] = 1.0 / 255, 0.0

    weights = _edited(tmp_path, to_unit, V3_SMALL)
    assert read_weights(weights).conventions["mean"] == (0.0,) * 3
    assert read_weights(weights).conventions["std"] == (1.0,) * 3
    with pytest.raises(InputError, match=r"(?s)the spec states mean = 0.485, 0.456, 0.406 here, .* mean = 0, 0, 0"):
        mnc.compile(SPECS / "timm_v3_small.mnet", alpha=0.5, resolution=96, weights=weights, out_dir=tmp_path)
    spec = _taken(SPECS / "timm_v3_small.mnet", weights, tmp_path)  # mean and std left out: 0 and 1
    result = mnc.compile(spec, alpha=0.5, resolution=96, weights=weights, out_dir=tmp_path)
    assert "mean" not in result.report["weights"].get("conventions", {})  # the spec's default is Keras's


@pytest.mark.parametrize("alpha,params", [(1.0, 5_483_032), (0.75, 3_993_528), (0.5, 2_689_904)])
def test_keras_mobilenet_v3_large_is_the_timm_v3_large_table(alpha, params):
    """No Large fixture is committed (too large); its trainable parameter counts, from Keras 3.15's
    MobileNetV3Large(weights=None, classes=1000) in tools/make_keras_fixtures.py's environment,
    equal the table's at each width."""
    assert mnc.summary(SPECS / "timm_v3_large.mnet", alpha=alpha)["params"] == params
