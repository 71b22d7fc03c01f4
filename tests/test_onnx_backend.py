"""The ONNX artifact: valid, deterministic, self-describing, and equal to the IR interpreter."""

import hashlib

import onnx
import pytest
from conftest import SPECS

from mnc.backends import onnx as onnx_backend
from mnc.backends.onnx import run_onnx
from mnc.ir.interpreter import run
from mnc.pipeline import build, record_of
from mnc.samples import sample_images
from mnc.verification.metrics import compare


@pytest.fixture(scope="module")
def v1_small():
    return build(SPECS / "v1.mnet", alpha=0.25, resolution=128, seed=3)


def _emit(built):
    return onnx_backend.emit(built.graph, record_of(built, []).to_metadata(), built.spec.settings.description)


@pytest.mark.parametrize(
    "spec,alpha,resolution",
    [
        ("v1.mnet", 0.25, 128),
        ("v1.mnet", 0.5, 160),
        ("v1.mnet", 1.0, 224),
        ("v2.mnet", 0.35, 96),
        ("v2.mnet", 1.0, 128),
        ("v2.mnet", 1.4, 160),
        ("v2.mnet", 0.5, 224),
    ],
)
def test_onnx_runtime_matches_interpreter(spec, alpha, resolution):
    built = build(SPECS / spec, alpha=alpha, resolution=resolution, seed=1)
    x = sample_images(built.spec.settings, resolution, 3, seed=11, stream=7)
    (reference,) = run(built.graph, {"input": x}).values()
    (actual,) = run_onnx(_emit(built), {"input": x})
    result = compare(actual, reference)
    assert result.max_rel_err < 1e-4 and result.cosine > 0.9999 and result.top1_agreement == 1.0, result


def test_model_is_valid_opset_17_with_clear_io_and_metadata(v1_small):
    model = onnx.load_from_string(_emit(v1_small))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["probabilities"]  # V1 ends with softmax
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 128, 128]
    meta = {p.key: p.value for p in model.metadata_props}
    spec_text = (SPECS / "v1.mnet").read_text()
    assert meta["mnc.spec_name"] == "mobilenet_v1"
    assert meta["mnc.spec_sha256"] == hashlib.sha256(spec_text.encode()).hexdigest()
    assert meta["mnc.spec_text"] == spec_text
    assert (meta["mnc.alpha"], meta["mnc.resolution"], meta["mnc.seed"]) == ("0.25", "128", "3")
    assert meta["mnc.version"]
    names = {n.name for n in model.graph.node}
    assert "stage7.block4.dw" in names  # IR names survive: the 5th block of the "5×" row


def test_v2_output_is_logits_and_relu6_is_clip_with_input_bounds():
    built = build(SPECS / "v2.mnet", alpha=0.35, resolution=64)
    model = onnx.load_from_string(_emit(built))
    assert [o.name for o in model.graph.output] == ["logits"]
    clips = [n for n in model.graph.node if n.op_type == "Clip"]
    assert clips and all(len(n.input) == 3 and not n.attribute for n in clips)
    bounds = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name.startswith("relu6")}
    assert bounds == {"relu6.min": 0.0, "relu6.max": 6.0}


def test_emission_is_byte_for_byte_deterministic():
    a = _emit(build(SPECS / "v2.mnet", alpha=0.5, resolution=96, seed=5))
    b = _emit(build(SPECS / "v2.mnet", alpha=0.5, resolution=96, seed=5))
    c = _emit(build(SPECS / "v2.mnet", alpha=0.5, resolution=96, seed=6))
    assert a == b and a != c
