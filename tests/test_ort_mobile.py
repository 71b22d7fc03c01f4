"""ONNX Runtime Mobile's accelerators: the model every .ort is converted from, judged by ONNX Runtime's
own usability checker (`python -m onnxruntime.tools.check_onnx_model_mobile_usability`, called here
in-process), takes the whole network in one NNAPI, one Core ML NeuralNetwork and one Core ML
MLProgram partition; fixed batches (the .ort's 1, ONNX's on request), verified sample by sample."""

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT, SPECS
from onnxruntime.tools.mobile_helpers import usability_checker
from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, is_fixed_size_tensor, optimize_model

from mnc.artifact import ArtifactRecord
from mnc.backends import TARGETS
from mnc.backends.target import NetworkFacts, TargetOptions
from mnc.cli import main
from mnc.passes.manager import resolve_pipeline, run_pipeline
from mnc.pipeline import build, compile_spec
from mnc.pipeline.compile import pass_options
from mnc.pipeline.quantize import quantize_with_ranges
from mnc.pipeline.request import Quantization
from mnc.quant.calibrate import activation_ranges
from mnc.quant.data import load_calibration

ALL_SPECS = sorted(SPECS.glob("*.mnet")) + sorted((ROOT / "examples" / "specs").glob("*.mnet"))
# The checker's three providers, as its `checker` calls them (the Core ML ones limit ranks to 5).
PROVIDERS = {
    "NNAPI": lambda model, fixed: usability_checker.check_nnapi_partitions(model, fixed),
    "CoreML NeuralNetwork": lambda model, fixed: usability_checker.check_coreml_partitions(
        model, fixed, "coreml_supported_neuralnetwork_ops.md"
    ),
    "CoreML MLProgram": lambda model, fixed: usability_checker.check_coreml_partitions(
        model, fixed, "coreml_supported_mlprogram_ops.md"
    ),
}
QDQ = {"ai.onnx:QuantizeLinear", "ai.onnx:DequantizeLinear"}
# Operators a provider lacks entirely (they are not in its support list), by precision, and why.
LACKS = {
    ("CoreML NeuralNetwork", "int8"): (QDQ, "Core ML's providers take no QuantizeLinear/DequantizeLinear"),
    ("CoreML MLProgram", "int8"): (QDQ, "Core ML's providers take no QuantizeLinear/DequantizeLinear"),
}
# Not a provider's limit but the checker's: it asks every input of a node for a fixed shape, and an
# omitted optional input ('') has none. mnc's bilinear Resize gives its output size as a constant
# `sizes` and omits `roi` and `scales`, as ONNX prescribes; NNAPI's and Core ML's Resize builders read
# an omitted scales as absent (`Exists()`), and a present one, even empty, as the scales to use. So the
# checker leaves Resize out where the providers would take it: allowed here, and nothing else is.
OMITTED_INPUTS_OP = "Resize"


def _resolution(spec) -> int:
    # SSDLite's extra layers halve the map five times after output stride 32: 288 is its smallest input.
    return 288 if spec.stem.startswith("ssdlite") else 64


def _ort_sources(spec) -> dict[str, bytes]:
    """The ONNX models the .ort target converts, fp32 and int8, for a small variant of the spec (int8:
    quantised with ranges from two synthetic samples; what is checked here is operators and shapes)."""
    target = TARGETS["ort"]
    built = build(spec, alpha=None if spec.stem.startswith("ssdlite") else 0.35, resolution=_resolution(spec))
    pipeline = resolve_pipeline("default")
    graph, _ = run_pipeline(built.graph, pipeline, options=pass_options(target, pipeline))
    data, _ = load_calibration("synthetic", built.spec.settings, _resolution(spec), 2, 0)
    quantized, _ = quantize_with_ranges(graph, activation_ranges(graph, data, "minmax"), 8)
    options = target.options(TargetOptions(), NetworkFacts(built.config.classes, (0.5,) * 3, (0.25,) * 3))
    record = ArtifactRecord("0", spec.stem, "", "", 1.0, _resolution(spec), built.config.classes, 0, ())
    return {
        "fp32": target.source_model(graph, record, options),
        "int8": target.source_model(quantized, record, options),
    }


def _as_the_checker_reads_it(model: bytes, tmp_path) -> onnx.ModelProto:
    """What `analyze_model` analyses: the model after ONNX Runtime's basic optimisations, with ONNX's
    shape inference run on it."""
    source, optimised = tmp_path / "source.onnx", tmp_path / "optimised.onnx"
    source.write_bytes(model)
    optimize_model(source, optimised, use_external_initializers=True)
    return ModelProtoWithShapeInfo(optimised).model_with_shape_info


def test_every_bundled_spec_is_one_partition_of_each_mobile_provider(tmp_path):
    """Failed before the .ort had a fixed batch and the mobile operators: NNAPI and Core ML took 0 of
    V3-Large's 161 nodes (a symbolic batch), and with shapes fixed NNAPI and Core ML NeuralNetwork
    would have split it in 30 partitions (HardSigmoid), Core ML MLProgram in 2 (Flatten)."""
    for spec, precision, source in ((s, p, m) for s in ALL_SPECS for p, m in _ort_sources(s).items()):
        model = _as_the_checker_reads_it(source, tmp_path)
        dynamic_inputs, dynamic_values = usability_checker.check_shapes(model.graph)
        assert (dynamic_inputs, dynamic_values) == ([], 0), spec.stem  # every value's shape is fixed
        nodes = {n.name: n for n in model.graph.node}
        for provider, partitions in PROVIDERS.items():
            lacked, _ = LACKS.get((provider, precision), (set(), ""))
            what = f"{spec.stem} {precision} {provider}"
            # Operators alone: every one the provider has is taken, in one partition when it lacks none.
            by_op = partitions(model, False)
            assert by_op.unsupported_ops == lacked, what
            if not lacked:
                assert (by_op.num_partitions, by_op.num_supported_nodes) == (1, len(nodes)), what
            # Operators and shapes, as the checker decides: the same, but for Resize's omitted inputs.
            info = partitions(model, True)
            taken = {n.name for group in info.supported_groups for n in group}
            left_out = {name for name, n in nodes.items() if name not in taken}
            resizes = {name for name in left_out if nodes[name].op_type == OMITTED_INPUTS_OP}
            assert {f"ai.onnx:{nodes[name].op_type}" for name in left_out - resizes} <= lacked, what
            assert all(set(_of_unknown_shape(model, nodes[name])) == {""} for name in resizes), what
            assert info.nodes_unsupported_due_to_dynamic_input == len(resizes), what
            if not left_out:
                assert (info.num_partitions, info.num_supported_nodes) == (1, len(nodes)), what


def _of_unknown_shape(model: onnx.ModelProto, node) -> list[str]:
    """The inputs of a node whose shapes the checker does not know to be fixed."""
    g = model.graph
    values = {v.name: v for v in [*g.input, *g.output, *g.value_info]}
    constants = {t.name for t in g.initializer}
    return [i for i in node.input if i not in constants and not (i in values and is_fixed_size_tensor(values[i]))]


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
    metadata = TARGETS["ort"].read_metadata(one.artifact)
    assert (metadata["mnc.batch"], metadata["mnc.mobile_ops"]) == ("1", "true")
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


def test_an_int8_ort_from_before_the_mobile_form_still_verifies(tmp_path, monkeypatch):
    """Its record names no batch and no operators: its layer check's twin takes ONNX's own operators
    and a symbolic batch, as it was built (a twin of other operators would not compute its output)."""
    from mnc.backends import onnx as onnx_target
    from mnc.backends import ort as ort_target

    with monkeypatch.context() as before:
        before.setattr(ort_target, "LOWERING", dataclasses.replace(onnx_target.LOWERING, target="ort"))
        before.setattr(ort_target.OrtTarget, "record_fields", lambda self, options: {})
        old = compile_spec(
            SPECS / "v3_small.mnet",
            target="ort",
            alpha=0.35,
            resolution=32,
            options=TargetOptions(batch="dynamic"),
            quantization=Quantization("synthetic", samples=4),
            out_dir=tmp_path,
        )
    assert not {"mnc.batch", "mnc.mobile_ops"} & set(TARGETS["ort"].read_metadata(old.artifact))
    assert _input_shape(old.artifact)[0][0] == "batch"
    assert main(["verify", str(old.artifact)]) == 0


def test_onnx_keeps_a_symbolic_batch_unless_asked_for_the_mobile_form(tmp_path):
    spec = ROOT / "examples" / "specs" / "lraspp_mobilenet_v3_large.mnet"
    common = dict(target="onnx", alpha=0.35, resolution=64)
    default = compile_spec(spec, out_dir=tmp_path / "default", **common)
    model = onnx.load(str(default.artifact))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert "mnc.batch" not in {p.key for p in model.metadata_props}
    assert {"Shape", "HardSigmoid"} <= {n.op_type for n in model.graph.node}
    assert default.typed.target_section["batch"] == "dynamic"
    mobile = compile_spec(
        spec, out_dir=tmp_path / "mobile", options=TargetOptions(batch="2", mobile_ops=True), **common
    )
    assert mobile.typed.verification.passed
    model = onnx.load(str(mobile.artifact))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 64, 64]
    assert all(o.type.tensor_type.shape.dim[0].dim_value == 2 for o in model.graph.output)
    assert not {"Shape", "HardSigmoid", "HardSwish", "Flatten"} & {n.op_type for n in model.graph.node}
    assert mobile.typed.target_section["batch"] == 2 and mobile.typed.target_section["ops"].startswith("mobile")
    assert main(["verify", str(mobile.artifact)]) == 0


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
