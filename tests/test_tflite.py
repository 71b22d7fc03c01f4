"""The TFLite target: flatbuffers built from the IR, NHWC without a TRANSPOSE, run in LiteRT with its
default and its reference kernels, parity with torchvision, and the damage verification must catch."""

import json

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from conftest import ROOT, SPECS, fp16_verifier
from safetensors.numpy import load_file

from mnc.backends.tflite import run_litert
from mnc.backends.tflite.flatbuffer import BUFFER_ALIGNMENT, read_model
from mnc.cli import main
from mnc.pipeline import TargetOptions, compile_spec

FIXTURES = ROOT / "tests" / "fixtures" / "torchvision"
EXAMPLES = ROOT / "examples" / "specs"
# The detection and segmentation examples have tests of their own (tests/test_tflite_dense.py).
DENSE = ("ssdlite320_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large")
ALL_SPECS = sorted(SPECS.glob("*.mnet")) + sorted(p for p in EXAMPLES.glob("*.mnet") if p.stem not in DENSE)


def _ops(path) -> list[tuple[str, int]]:
    model = read_model(path)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = model.operatorCodes
    return [
        (names[codes[o.opcodeIndex].builtinCode], codes[o.opcodeIndex].version) for o in model.subgraphs[0].operators
    ]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_every_spec_compiles_and_verifies_in_litert(tmp_path, spec):
    result = compile_spec(spec, target="tflite", resolution=64, out_dir=tmp_path)
    v = result.report["verification"]
    assert v["verdict"] == "pass" and [r["verdict"] for r in v["runs"]] == ["pass", "pass"]
    assert "reference kernels" in v["runs"][1]["executor"]
    ops = _ops(result.artifact)
    assert "TRANSPOSE" not in {name for name, _ in ops}
    assert {version for _, version in ops} == {1}  # float graphs: version 1 throughout, as the converter sets


def test_nhwc_input_layouts_signature_and_metadata(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(10)))
    result = compile_spec(
        SPECS / "v2.mnet",
        target="tflite",
        alpha=0.35,
        resolution=64,
        classes=10,
        out_dir=tmp_path,
        options=TargetOptions(labels=str(labels)),
    )
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(result.artifact))
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["input"], "outputs": ["logits"]}}
    (inp,) = interpreter.get_input_details()
    assert list(inp["shape"]) == [1, 64, 64, 3] and list(inp["shape_signature"]) == [-1, 64, 64, 3]
    model = read_model(result.artifact)
    tensors = {t.name.decode(): t for t in model.subgraphs[0].tensors}
    assert list(tensors["stage0.block0.conv.weight"].shape) == [16, 3, 3, 3]  # OHWI
    assert list(tensors["stage1.block0.dw.weight"].shape) == [1, 3, 3, 16]  # depthwise 1HWO
    meta = {m.name.decode(): bytes(model.buffers[m.buffer].data).decode() for m in model.metadata}
    assert meta["labels"].splitlines() == [f"class {i}" for i in range(10)]
    assert meta["mnc.spec_name"] == "mobilenet_v2" and meta["mnc.alpha"] == "0.35"
    assert main(["verify", str(result.artifact)]) == 0


def test_buffers_are_16_byte_aligned(tmp_path):
    result = compile_spec(SPECS / "v1.mnet", target="tflite", alpha=0.25, resolution=32, out_dir=tmp_path)
    data = np.frombuffer(result.artifact.read_bytes(), dtype=np.uint8)
    model = schema.Model.GetRootAs(data, 0)
    base = data.__array_interface__["data"][0]
    offsets = [
        model.Buffers(i).DataAsNumpy().__array_interface__["data"][0] - base
        for i in range(model.BuffersLength())
        if model.Buffers(i).DataLength()
    ]
    assert len(offsets) > 20 and all(o % BUFFER_ALIGNMENT == 0 for o in offsets)


def test_symmetric_padding_at_stride_2_is_an_explicit_pad_and_same_padding_is_not(tmp_path):
    v2 = compile_spec(SPECS / "v2.mnet", target="tflite", alpha=0.35, resolution=64, out_dir=tmp_path / "a")
    v1 = compile_spec(SPECS / "v1.mnet", target="tflite", alpha=0.25, resolution=64, out_dir=tmp_path / "b")
    assert sum(name == "PAD" for name, _ in _ops(v2.artifact)) == 5  # V2's five stride-2 layers (even sizes)
    assert sum(name == "PAD" for name, _ in _ops(v1.artifact)) == 0  # V1 pads as TensorFlow's SAME


def test_fp16_stores_half_weights_behind_dequantize(tmp_path):
    result = compile_spec(
        SPECS / "v3_small.mnet",
        target="tflite",
        resolution=64,
        out_dir=tmp_path,
        options=TargetOptions(precision="fp16"),
    )
    assert result.report["verification"]["verdict"] == "pass"
    tolerance = result.report["verification"]["tolerance"]
    # float16 weights, float32 arithmetic: the derived float32 bound, the reference's weights rounded
    assert tolerance["precision"] == "fp16" and "rounded to float16" in tolerance["rule"]
    assert result.report["verification"]["metrics"]["exceedance"] <= 1
    ops = _ops(result.artifact)
    assert ("DEQUANTIZE", 3) in ops
    types = {t.type for t in read_model(result.artifact).subgraphs[0].tensors if t.buffer}
    assert schema.TensorType.FLOAT16 in types
    fp32 = compile_spec(SPECS / "v3_small.mnet", target="tflite", resolution=64, out_dir=tmp_path / "32")
    assert result.artifact.stat().st_size < 0.6 * fp32.artifact.stat().st_size


def test_image_input_takes_pixels_and_normalises_inside(tmp_path):
    result = compile_spec(
        SPECS / "v2.mnet",
        target="tflite",
        alpha=0.35,
        resolution=64,
        out_dir=tmp_path,
        options=TargetOptions(image_input=True),
    )
    assert result.report["verification"]["verdict"] == "pass"
    from ai_edge_litert.interpreter import Interpreter

    (inp,) = Interpreter(model_path=str(result.artifact)).get_input_details()
    assert inp["dtype"] == np.uint8


@pytest.mark.parametrize(
    "arch,spec,width", [("mobilenet_v2", "v2.mnet", "0.5"), ("mobilenet_v3_large", "v3_large.mnet", "1.0")]
)
def test_tflite_matches_torchvision(tmp_path, arch, spec, width):
    weights = FIXTURES / f"{arch}_w{width}.safetensors"
    if not weights.exists():
        weights = weights.with_suffix(".npz")
    result = compile_spec(
        SPECS / spec, target="tflite", alpha=float(width), resolution=64, weights=weights, out_dir=tmp_path
    )
    io = load_file(FIXTURES / f"{arch}_w{width}_r64.safetensors")
    (y,) = run_litert(result.artifact, {"input": io["input"]})
    expected = io["output"]
    assert np.abs(y - expected).max() <= 1e-4 * np.abs(expected).max()
    assert (y.argmax(1) == expected.argmax(1)).all()


def test_corrupted_weight_buffer_fails_verify(tmp_path, capsys):
    result = compile_spec(SPECS / "v2.mnet", target="tflite", alpha=0.35, resolution=64, out_dir=tmp_path)
    data = bytearray(result.artifact.read_bytes())
    model = schema.Model.GetRootAs(bytes(data), 0)
    tensors = model.Subgraphs(0)
    index = next(
        i for i in range(tensors.TensorsLength()) if tensors.Tensors(i).Name().decode() == "stage3.block0.expand.weight"
    )
    raw = model.Buffers(tensors.Tensors(index).Buffer()).DataAsNumpy().tobytes()
    # Find the buffer in the file by its bytes, then scale the weights by 1.5.
    start = bytes(data).index(raw)
    weights = np.frombuffer(raw, np.float32) * 1.5
    data[start : start + len(raw)] = weights.astype(np.float32).tobytes()
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(bytes(data))
    assert main(["verify", str(broken)]) == 3
    assert "LiteRT" in capsys.readouterr().err


GROUPED = """\
name = grouped
input_channels = 3
base_resolution = 32
classes = 10
activation = relu
width_rounding = make_divisible(divisor=8)
padding = same

block grouped(c: channels)
    conv(3, c, groups=2)
end

| operator       | c  | s |
|----------------|----|---|
| conv2d 3x3     | 16 | 2 |
| grouped        | 16 |   |
| avgpool global |    |   |
| fc             | k  |   |
"""


def test_grouped_convolution_is_bad_input_naming_the_line_and_target(tmp_path, capsys):
    spec = tmp_path / "grouped.mnet"
    spec.write_text(GROUPED)
    out = tmp_path / "out"
    assert main(["compile", str(spec), "--target", "tflite", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--target tflite cannot express a grouped convolution (2 groups of 16 channels)" in err, err
    assert f"{spec}:16:3: error" in err  # the table row that uses the block
    assert not out.exists() or not any(out.iterdir())
    assert main(["compile", str(spec), "--target", "onnx", "-o", str(out)]) == 0  # ONNX can


def test_report_names_the_layout(tmp_path):
    result = compile_spec(SPECS / "v1.mnet", target="tflite", alpha=0.25, resolution=32, out_dir=tmp_path)
    report = json.loads(result.report_path.read_text())
    assert report["tflite"] == {"precision": "fp32", "image_input": False, "labels": 0, "layout": "NHWC"}


# ---- int8 ---------------------------------------------------------------------------------------

DIGITS = ROOT / "tests" / "fixtures" / "digits"


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda p: p.stem)
def test_int8_every_layer_within_one_step_of_the_fake_quant_reference(tmp_path, spec):
    from mnc.pipeline import Quantization

    result = compile_spec(
        spec,
        target="tflite",
        resolution=64,
        out_dir=tmp_path,
        quantization=Quantization("synthetic", samples=8),
    )
    v = result.report["verification"]
    assert v["verdict"] == "pass" and v["layers"]["verdict"] == "pass" and v["layers"]["max_lsb"] <= 1
    assert v["layers"]["layers"] >= 18  # every quantised layer: v1_conv, the smallest network here, has 18
    ops = dict(_ops(result.artifact))
    assert ops["CONV_2D"] == 3 and ops["FULLY_CONNECTED"] == 4
    assert ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 2
    model = read_model(result.artifact)
    tensors = {t.name.decode(): t for t in model.subgraphs[0].tensors}
    if spec.stem != "v1_conv":  # the V1 paper's full-convolution baseline has no depthwise layer
        assert ops["DEPTHWISE_CONV_2D"] == 3
        dw = next(t for n, t in tensors.items() if n.endswith(".dw.weight"))
        assert dw.type == schema.TensorType.INT8 and dw.quantization.quantizedDimension == 3
        assert set(dw.quantization.zeroPoint) == {0} and len(dw.quantization.scale) == dw.shape[3]
    fixed = [
        o.outputs[0]
        for o, (name, _) in zip(model.subgraphs[0].operators, _ops(result.artifact))
        if name in ("SOFTMAX", "LOGISTIC")
    ]  # TFLite requires their outputs on the 1/256 grid
    for index in fixed:
        q = model.subgraphs[0].tensors[index].quantization
        assert (q.scale[0], q.zeroPoint[0]) == (1 / 256, -128)
    if spec.stem.startswith("v1") or spec.stem == "mnasnet_a1":  # V1 ends in softmax; MnasNet's SE gate: sigmoid
        assert fixed
    assert result.artifact.stat().st_size < 0.3 * 4 * result.report["params"] + 200_000


def test_int8_keeps_the_trained_networks_accuracy(tmp_path):
    from mnc.pipeline import Quantization
    from mnc.samples import normalise

    common = dict(target="tflite", alpha=0.35, resolution=32, weights=DIGITS / "mobilenet_v2_digits.safetensors")
    q = compile_spec(
        SPECS / "v2.mnet", out_dir=tmp_path / "q", quantization=Quantization(str(DIGITS / "calib"), 64), **common
    )
    f = compile_spec(SPECS / "v2.mnet", out_dir=tmp_path / "f", **common)
    data = np.load(DIGITS / "heldout.npz")
    from mnc.frontend import load_spec

    x = normalise(load_spec(SPECS / "v2.mnet").settings, data["images"].astype(np.float32))
    (yq,) = run_litert(q.artifact, {"input": x})
    (yf,) = run_litert(f.artifact, {"input": x})
    labels = data["labels"]
    assert (yq.argmax(1) == labels).mean() >= (yf.argmax(1) == labels).mean() - 0.01
    assert (yq.argmax(1) == yf.argmax(1)).mean() >= 0.98


def test_int8_with_image_input_is_fed_pixels(tmp_path):
    from mnc.pipeline import Quantization

    result = compile_spec(
        SPECS / "v2.mnet",
        target="tflite",
        alpha=0.35,
        resolution=32,
        out_dir=tmp_path,
        quantization=Quantization("synthetic", samples=8),
        options=TargetOptions(image_input=True),
    )
    assert result.report["verification"]["layers"]["verdict"] == "pass"
    assert main(["verify", str(result.artifact)]) == 0


def test_corrupted_int8_weights_fail_at_their_layer(tmp_path, capsys):
    from mnc.pipeline import Quantization

    result = compile_spec(
        SPECS / "v2.mnet",
        target="tflite",
        alpha=0.35,
        resolution=32,
        out_dir=tmp_path,
        quantization=Quantization("synthetic", samples=8),
    )
    data = bytearray(result.artifact.read_bytes())
    model = schema.Model.GetRootAs(bytes(data), 0)
    sub = model.Subgraphs(0)
    index = next(i for i in range(sub.TensorsLength()) if sub.Tensors(i).Name().decode() == "stage3.block0.dw.weight")
    raw = model.Buffers(sub.Tensors(index).Buffer()).DataAsNumpy().tobytes()
    start = bytes(data).index(raw)
    ints = np.frombuffer(raw, np.int8).copy()
    ints[::7] = -ints[::7]  # flip the sign of one weight in seven
    data[start : start + len(raw)] = ints.tobytes()
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(bytes(data))
    assert main(["verify", str(broken)]) == 3
    assert "layer 'stage3.block0.dw'" in capsys.readouterr().err


FC_ON_A_MAP = """\
name = flat
input_channels = 3
base_resolution = 16
classes = 10
activation = relu
width_rounding = make_divisible(divisor=8)
padding = same

| operator       | c  | s |
|----------------|----|---|
| conv2d 3x3     | 16 | 2 |
| fc             | k  |   |
"""


def test_int8_fc_on_a_spatial_map_is_checked_in_the_irs_order(tmp_path):
    """The flattened map is H×W×C in TFLite and C×H×W in the IR: the layer check reorders it."""
    from mnc.pipeline import Quantization

    spec = tmp_path / "flat.mnet"
    spec.write_text(FC_ON_A_MAP)
    result = compile_spec(spec, target="tflite", out_dir=tmp_path, quantization=Quantization("synthetic", samples=8))
    v = result.report["verification"]
    assert v["layers"]["verdict"] == "pass" and v["metrics"]["cosine"] > 0.999
    assert result.report["artifact"]["input"]["shape"] == ["batch", 16, 16, 3]  # the model's own NHWC


def test_an_int8_artifact_the_runtime_rejects_is_a_failed_verification(tmp_path, capsys, monkeypatch):
    from mnc.backends import tflite
    from mnc.backends.target import Executor

    def broken(artifact, feeds):
        raise RuntimeError("cannot load model")

    monkeypatch.setattr(tflite.TARGET, "executors", lambda: [Executor("broken runtime", broken)])
    code = main(
        [
            "compile",
            str(SPECS / "v1.mnet"),
            "--alpha",
            "0.25",
            "--resolution",
            "32",
            "--target",
            "tflite",
            "--quantize",
            "int8",
            "--calib",
            "synthetic",
            "--calib-samples",
            "4",
            "-o",
            str(tmp_path),
        ]
    )
    assert code == 3 and "broken runtime could not run it: RuntimeError: cannot load model" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_int8_network_without_a_classifier_prints_its_figures(tmp_path, capsys):
    spec = tmp_path / "pool.mnet"
    spec.write_text(FC_ON_A_MAP.replace("| fc             | k  |   |", "| avgpool global |    |   |"))
    assert (
        main(
            [
                "compile",
                str(spec),
                "--target",
                "tflite",
                "--quantize",
                "int8",
                "--calib",
                "synthetic",
                "--calib-samples",
                "4",
                "-o",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "top-1 agreement n/a" in capsys.readouterr().out


def test_an_fp16_model_whose_weights_are_not_the_rounded_ones_fails(tmp_path):
    """The fp16 bound is the float32 one around the rounded weights: weights one float16 step off
    in a single layer already exceed it."""
    from mnc.backends import tflite as tflite_backend

    options = TargetOptions(precision="fp16")
    result = compile_spec(
        SPECS / "v1.mnet", target="tflite", alpha=0.25, resolution=64, out_dir=tmp_path, options=options
    )
    emitted, verify = fp16_verifier(result.artifact, tflite_backend.TARGET, SPECS / "v1.mnet", 0.25, 64)
    assert verify(emitted).passed
    node = emitted.node("stage5.block0.pw")
    node.params = {**node.params, "weight": node.params["weight"] * (1 + 2.0**-10)}
    assert not verify(emitted).passed
