"""The TFLite target on detection and segmentation networks: bilinear resize (half-pixel centres),
concatenation (int8: inputs requantised to the output's grid), per-anchor rows (a RESHAPE of NHWC),
windowed average pooling, dilated convolutions and several outputs, in fp32, fp16 and int8, with
parity against torchvision's outputs (fixtures: tools/make_dense_fixtures.py)."""

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from conftest import ROOT

from mnc.backends import TARGETS
from mnc.backends.tflite import run_litert
from mnc.backends.tflite.flatbuffer import read_model
from mnc.backends.tflite.model import build_model
from mnc.backends.tflite.options import TFLiteOptions
from mnc.backends.tflite.resize import resize_allowance
from mnc.cli import main
from mnc.ir import kernels
from mnc.ir.graph import Graph
from mnc.ir.node import Affine, QParams
from mnc.ir.shapes import infer_shapes
from mnc.pipeline import Quantization, TargetOptions, compile_spec
from mnc.quant.scheme import fake_quantize

FIXTURES = ROOT / "tests" / "fixtures" / "torchvision_dense"
EXAMPLES = ROOT / "examples" / "specs"
CALIB = ROOT / "tests" / "fixtures" / "photos" / "calib"
MODELS = {  # spec → (fixture resolution, outputs)
    "ssdlite320_mobilenet_v3_large": (320, ("bbox_regression", "cls_logits")),
    "lraspp_mobilenet_v3_large": (72, ("out",)),
    "deeplabv3_mobilenet_v3_large": (72, ("out",)),
}
OPERATOR_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _ops(path) -> list[tuple[str, int]]:
    model = read_model(path)
    codes = model.operatorCodes
    return [
        (OPERATOR_NAMES[codes[o.opcodeIndex].builtinCode], codes[o.opcodeIndex].version)
        for o in model.subgraphs[0].operators
    ]


def _compile(name: str, tmp_path, **kwargs):
    resolution, _ = MODELS[name]
    return compile_spec(
        EXAMPLES / f"{name}.mnet",
        target="tflite",
        resolution=resolution,
        weights=FIXTURES / f"{name}.npz",
        out_dir=tmp_path,
        **kwargs,
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_bundled_spec_computes_what_torchvision_computed_in_litert(tmp_path, name):
    resolution, outputs = MODELS[name]
    result = _compile(name, tmp_path)
    v = result.report["verification"]
    assert v["verdict"] == "pass" and [r["verdict"] for r in v["runs"]] == ["pass", "pass"]
    assert [o["name"] for o in result.report["artifact"]["outputs"]] == list(outputs)
    data = np.load(FIXTURES / f"{name}_r{resolution}.npz")
    actual = TARGETS["tflite"].executors()[0].run(result.artifact, {"input": data["input"]})
    assert len(actual) == len(outputs)
    for output, got in zip(outputs, actual):  # in the graph's order, each in the IR's layout
        expected = data[output]
        assert got.shape == expected.shape, output
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), output
    ops = dict(_ops(result.artifact))
    assert "TRANSPOSE" not in ops
    # Versions as the converter sets them: half-pixel RESIZE_BILINEAR is 3, a dilated float depthwise 2.
    expected_versions = {"RESIZE_BILINEAR": 3, "DEPTHWISE_CONV_2D": 1 if name.startswith("ssd") else 2}
    assert {op: version for op, version in ops.items() if version != 1} == {
        op: version for op, version in expected_versions.items() if op in ops and version != 1
    }
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(model_path=str(result.artifact)).get_signature_list()["serving_default"]
    assert sorted(signature["outputs"]) == sorted(outputs)


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_fp16_dense_networks_verify(tmp_path, name):
    result = _compile(name, tmp_path, options=TargetOptions(precision="fp16"))
    v = result.report["verification"]
    assert v["verdict"] == "pass" and v["metrics"]["exceedance"] <= 1
    assert "rounded to float16" in v["tolerance"]["rule"]
    assert ("DEQUANTIZE", 3) in _ops(result.artifact)


def test_int8_lraspp_every_layer_within_one_step(tmp_path):
    result = _compile("lraspp_mobilenet_v3_large", tmp_path, quantization=Quantization(CALIB))
    v = result.report["verification"]
    assert v["verdict"] == "pass"
    assert v["layers"]["verdict"] == "pass" and v["layers"]["max_lsb"] <= 1 and v["layers"]["layers"] > 90
    ops = dict(_ops(result.artifact))
    assert ops["RESIZE_BILINEAR"] == 3 and ops["DEPTHWISE_CONV_2D"] == 3 and ops["CONV_2D"] == 3
    assert ops["LOGISTIC"] == 2 and ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 2
    # The head's gate conv has no bias: an int32 zero bias, as the int8 kernels take it.
    tensors = {t.name.decode(): t for t in read_model(result.artifact).subgraphs[0].tensors}
    assert tensors["stage17.block0.scale.bias"].type == schema.TensorType.INT32


# ---- every new op in one small network --------------------------------------------------------

MIXED = """\
name = dense_ops
input_channels = 3
base_resolution = 80
classes = 4
activation = relu
width_rounding = make_divisible(divisor=8)
padding = symmetric
outputs = rows, map, wide

block mixer(low: tap, c: channels)
    dw      = conv(3, in, groups=in, dilation=2)
    up      = upsample(to=low)
    side    = conv(1, c, from=low, act=hswish)
    joined  = concat(up, side)
    project = conv(1, c)
    pooled  = pool(3, stride=2)
end

block predict(anchors: int, values: int)
    dw      = conv(3, in, groups=in, act=relu6)
    predict = conv(1, anchors * values, bn=no, act=none)
    rows    = per_anchor(values)
end

block widen(to: tap = image)
    wide = upsample(to=to)
end

| operator   | c  | s | d | tap  |
|------------|----|---|---|------|
| conv2d 3x3 | 16 | 2 | - |      |
| conv2d 3x3 | 16 | 2 | 2 | low  |
| conv2d 3x3 | 24 | 2 | - |      |
| conv2d 3x3 | 24 | 2 | 3 | high |

part head
| from   | operator | low | c  | anchors | values | tap  |
|--------|----------|-----|----|---------|--------|------|
| high   | mixer    | low | 16 |         |        | map  |
| high   | widen    |     |    |         |        | wide |
| low    | predict  |     |    | 3       | 4      | r1   |
| high   | predict  |     |    | 2       | 4      | r2   |
| r1, r2 | concat   |     |    |         |        | rows |
"""


@pytest.fixture
def mixed(tmp_path):
    spec = tmp_path / "dense_ops.mnet"
    spec.write_text(MIXED)
    return spec


def test_every_new_op_and_three_outputs_in_order(tmp_path, mixed):
    # At 72: 5 → 18 and 5 → 72 upsampling (scales 3.6 and 14.4); stride-2 dilated convolutions on an
    # even map (an explicit PAD, judged on the dilated extent) and on an odd one (SAME).
    result = compile_spec(mixed, target="tflite", resolution=72, out_dir=tmp_path / "out")
    v = result.report["verification"]
    assert v["verdict"] == "pass" and [r["verdict"] for r in v["runs"]] == ["pass", "pass"]
    outputs = result.report["artifact"]["outputs"]
    assert [(o["name"], o["shape"]) for o in outputs] == [
        ("rows", ["batch", 18 * 18 * 3 + 5 * 5 * 2, 4]),  # rows, not transposed
        ("map", ["batch", 8, 8, 16]),
        ("wide", ["batch", 72, 72, 24]),
    ]
    x = np.random.default_rng(0).standard_normal((2, 3, 72, 72)).astype(np.float32)
    for reference_kernels in (False, True):
        rows, feature_map, wide = run_litert(result.artifact, {"input": x}, reference_kernels=reference_kernels)
        assert rows.shape == (2, 1022, 4) and feature_map.shape == (2, 16, 8, 8) and wide.shape == (2, 24, 72, 72)
    ops = _ops(result.artifact)
    names = [name for name, _ in ops]
    assert names.count("PAD") == 3  # the stride-2 layers on even maps (72, 36 dilated, 18), not the one on 9
    assert names.count("RESHAPE") == 2 and names.count("CONCATENATION") == 2
    assert names.count("AVERAGE_POOL_2D") == 1 and names.count("RESIZE_BILINEAR") == 2
    model = read_model(result.artifact)
    dilations = sorted(
        (o.builtinOptions.dilationHFactor, o.builtinOptions.padding)
        for o, (name, _) in zip(model.subgraphs[0].operators, ops)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and o.builtinOptions.dilationHFactor > 1
    )
    assert dilations == [(2, schema.Padding.SAME), (2, schema.Padding.VALID), (3, schema.Padding.SAME)]


def test_int8_every_new_op_within_one_step_and_concat_inputs_on_its_grid(tmp_path, mixed):
    # At 80 the upsampling ratios (5 → 20, 5 → 80) are ones TFLite's int8 kernel represents exactly.
    result = compile_spec(
        mixed,
        target="tflite",
        out_dir=tmp_path / "out",
        quantization=Quantization("synthetic", samples=8),
    )
    v = result.report["verification"]
    assert v["verdict"] == "pass" and v["layers"]["verdict"] == "pass" and v["layers"]["max_lsb"] <= 1
    ops = _ops(result.artifact)
    versions = dict(ops)
    assert versions["CONCATENATION"] == 2 and versions["AVERAGE_POOL_2D"] == 2 and versions["RESIZE_BILINEAR"] == 3
    assert versions["RESHAPE"] == 1 and versions["QUANTIZE"] == 1
    model = read_model(result.artifact)
    tensors = model.subgraphs[0].tensors

    def grid(index):
        q = tensors[index].quantization
        return float(np.float32(q.scale[0])), q.zeroPoint[0]

    concats = [o for o, (name, _) in zip(model.subgraphs[0].operators, ops) if name == "CONCATENATION"]
    assert len(concats) == 2
    for o in concats:  # TFLite's int8 CONCATENATION copies bytes: every input on the output's grid
        assert all(grid(i) == grid(o.outputs[0]) for i in o.inputs)
        assert all(tensors[i].type == schema.TensorType.INT8 for i in o.inputs)
    requantised = [
        o for o, (name, _) in zip(model.subgraphs[0].operators, ops) if name == "QUANTIZE" and o.inputs[0] != 0
    ]
    assert requantised and all(tensors[o.inputs[0]].type == schema.TensorType.INT8 for o in requantised)
    assert [t.name.decode() for t in (tensors[i] for i in model.subgraphs[0].outputs)] == ["rows", "map", "wide"]
    assert main(["verify", str(result.artifact)]) == 0


# ---- RESIZE_BILINEAR against mnc's kernel (PyTorch's align_corners=False) -----------------------


def _resize_model(path, channels: int, size_in, size_out, q: Affine | None = None):
    graph = Graph("resize")
    graph.add("input", "input", attrs={"shape": [channels, *size_in]})
    graph.add("up", "resize", ["input"], attrs={"size": list(size_out)})
    graph.outputs = ["up"]
    infer_shapes(graph)
    if q is not None:
        graph.node("input").qparams = graph.node("up").qparams = QParams(q)
    path.write_bytes(build_model(graph, {}, TFLiteOptions()))
    return path


@pytest.mark.parametrize(
    "size_in,size_out", [((5, 5), (9, 9)), ((5, 5), (72, 72)), ((5, 7), (18, 40)), ((3, 4), (4, 3))]
)
def test_resize_bilinear_is_half_pixel_bilinear_at_any_scale(tmp_path, size_in, size_out):
    x = np.random.default_rng(1).standard_normal((2, 4, *size_in)).astype(np.float32)
    expected = kernels.resize_bilinear(x.astype(np.float64), size_out)
    path = _resize_model(tmp_path / "resize.tflite", 4, size_in, size_out)
    for reference_kernels in (False, True):
        (y,) = run_litert(path, {"input": x}, reference_kernels=reference_kernels)
        assert y.shape == expected.shape and np.abs(y - expected).max() <= 1e-5


@pytest.mark.parametrize("size_in,size_out", [((5, 5), (20, 20)), ((9, 9), (72, 72)), ((1, 1), (6, 6))])
def test_int8_resize_bilinear_within_one_step(tmp_path, size_in, size_out):
    q = Affine(8 / 255, 128)
    x = fake_quantize(np.random.default_rng(2).standard_normal((2, 4, *size_in)), q)
    expected = fake_quantize(kernels.resize_bilinear(x, size_out), q)
    path = _resize_model(tmp_path / "resize.tflite", 4, size_in, size_out, q)
    for reference_kernels in (False, True):
        (y,) = run_litert(path, {"input": x.astype(np.float32)}, reference_kernels=reference_kernels)
        assert np.rint(np.abs(y - expected) / q.scale).max() <= 1


@pytest.mark.parametrize("size_in,size_out", [((5, 5), (72, 72)), ((5, 7), (18, 40)), ((33, 33), (65, 65))])
def test_int8_resize_bilinear_within_one_step_plus_its_fixed_point_positions(tmp_path, size_in, size_out):
    # Where 1024·in/out is not an even integer TFLite samples at positions off by up to a few 1/1024
    # pixel per output step; the layer check allows for it by the derived resize_allowance.
    q = Affine(8 / 255, 128)
    x = fake_quantize(np.random.default_rng(3).standard_normal((2, 4, *size_in)), q)
    expected = fake_quantize(kernels.resize_bilinear(x, size_out), q)
    allowance = resize_allowance(x, size_out) / q.scale
    path = _resize_model(tmp_path / "resize.tflite", 4, size_in, size_out, q)
    (y,) = run_litert(path, {"input": x.astype(np.float32)}, reference_kernels=True)
    steps = np.rint(np.abs(y - expected) / q.scale)
    assert (steps <= 1 + allowance).all()
    if size_out == (72, 72):
        assert steps.max() > 1  # the case the allowance exists for


def test_int8_at_upsampling_ratios_tflite_cannot_represent_verifies_with_the_derived_allowance(tmp_path, mixed):
    result = compile_spec(
        mixed,
        target="tflite",
        resolution=72,
        out_dir=tmp_path / "out",
        quantization=Quantization("synthetic", samples=8),
    )
    layers = result.report["verification"]["layers"]
    assert layers["verdict"] == "pass" and layers["allowance"]["max_lsb_beyond_it"] <= 1
    assert sorted(layers["allowance"]["layers"]) == ["stage4.block0.up", "stage5.block0.wide"]
