"""mnc writes Core ML packages itself (mnc/backends/coreml_mil.py). The same lowering run through
coremltools' own MIL builder and `ct.convert` must give the same package, byte for byte: the model
specification and the weight file, for every op and option mnc writes. Only the provenance differs
(coremltools names itself in the metadata; mnc names itself), and is set alike before comparing."""

import contextlib
import io

import numpy as np
import pytest
from conftest import ROOT, SPECS

from mnc.backends import coreml as coreml_backend
from mnc.backends.coreml import coremltools
from mnc.backends.coreml_lowering import CoreMLOptions, describe_for_apps, lower
from mnc.backends.coreml_mil import proto
from mnc.backends.target import INPUT_NAME
from mnc.passes.image_input import PIXEL_MAX
from mnc.pipeline import TargetOptions, compile_spec
from mnc.pipeline.request import Quantization

EXAMPLES = ROOT / "examples" / "specs"

ct = coremltools()
from coremltools.converters.mil import Builder as mb  # noqa: E402

# mnc's IR arrives optimised, so of coremltools' passes only dead-code elimination is run, as mnc
# did when it built with coremltools. (The default pipeline would also rewrite the input
# normalisation into batch_norm(variance=1, epsilon=1e-5), scaling every input by 1/√(1+1e-5).)
_PASSES = ["common::dead_code_elimination"]
_COREMLTOOLS_METADATA = (
    "com.github.apple.coremltools.conversion_date",
    "com.github.apple.coremltools.source",
    "com.github.apple.coremltools.version",
)


def _with_coremltools(graph, metadata: dict, options: CoreMLOptions):
    """The package as coremltools builds it from the same lowering: (model specification, weights)."""
    mb.name_count.clear()  # coremltools numbers generated names per process; count as a first build would
    target = getattr(ct.target, options.deployment_target)
    (input_node,) = graph.inputs
    shape = (1, *graph.node(input_node).shape)

    @mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=target)
    def program(input):  # noqa: A002  (MIL names the program's input after this parameter)
        results = lower(mb, graph, options, input)
        return results[0] if len(results) == 1 else tuple(results)

    kwargs = {}
    if options.image_input:
        layout = ct.colorlayout.RGB if shape[1] == 3 else ct.colorlayout.GRAYSCALE
        kwargs["inputs"] = [
            ct.ImageType(name=INPUT_NAME, shape=shape, scale=1 / PIXEL_MAX, bias=[0.0] * shape[1], color_layout=layout)
        ]
    if options.labels:
        kwargs["classifier_config"] = ct.ClassifierConfig(list(options.labels))
    with contextlib.redirect_stderr(io.StringIO()):  # progress bars
        model = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=target,
            compute_precision=ct.precision.FLOAT32,  # fp16 programs are built in fp16
            pass_pipeline=ct.PassPipeline(pass_names=_PASSES, pipeline_name="mnc"),
            **kwargs,
        )
    spec = model.get_spec()
    for key in _COREMLTOOLS_METADATA:
        spec.description.metadata.userDefined.pop(key, None)
    describe_for_apps(spec, graph, options, metadata)  # what mnc adds after coremltools, as it did
    weights = (model.weights_dir and open(f"{model.weights_dir}/weight.bin", "rb").read()) or b""
    return spec, weights


def _written(package):
    data = package / "Data" / "com.apple.CoreML"
    spec = proto().Model_pb2.Model()
    spec.ParseFromString((data / "model.mlmodel").read_bytes())
    return spec, (data / "weights" / "weight.bin").read_bytes()


BUILDS = [
    ("v2.mnet", {}, {}),
    ("v2.mnet", {}, {"precision": "fp32"}),
    ("v3_small.mnet", {}, {"image_input": True, "labels": True}),
    ("v3_small.mnet", {}, {"precision": "fp32", "image_input": True, "labels": True, "deployment_target": "iOS15"}),
    ("v3_large.mnet", {"quantize": "int8"}, {}),
    ("v3_large.mnet", {"quantize": "int8"}, {"deployment_target": "iOS17"}),
    ("v2.mnet", {"quantize": "int8"}, {"deployment_target": "iOS18", "precision": "fp32"}),
    ("v1.mnet", {}, {"deployment_target": "macOS13", "image_input": True}),
    (EXAMPLES / "lraspp_mobilenet_v3_large.mnet", {}, {}),
    (EXAMPLES / "efficientnet_b0.mnet", {}, {"precision": "fp32"}),
]


@pytest.mark.parametrize("spec,build,options", BUILDS, ids=lambda v: str(getattr(v, "name", v)))
def test_mnc_writes_the_package_coremltools_writes(tmp_path, monkeypatch, spec, build, options):
    captured = []
    write = coreml_backend.write
    monkeypatch.setattr(coreml_backend, "write", lambda *a: (captured.append(a), write(*a)))
    options = dict(options)
    classes = None
    if options.pop("labels", False):
        classes = 5
        labels = tmp_path / "labels.txt"
        labels.write_text("".join(f"class {i}\n" for i in range(classes)))
        options["labels"] = str(labels)
    quantization = Quantization("synthetic", samples=8) if build.get("quantize") else None
    spec_path = spec if not isinstance(spec, str) else SPECS / spec
    result = compile_spec(
        spec_path,
        target="coreml",
        alpha=0.35 if "efficientnet" not in str(spec) else 0.25,
        resolution=96,
        classes=classes,
        out_dir=tmp_path / "out",
        options=TargetOptions(**options),
        quantization=quantization,
    )
    assert result.typed.verification.passed
    (graph, _, metadata, coreml_options) = captured[0]
    reference, reference_weights = _with_coremltools(graph, metadata, coreml_options)
    written, weights = _written(result.artifact)
    # The provenance: each names its writer.
    reference.mlProgram.attributes["buildInfo"].CopyFrom(written.mlProgram.attributes["buildInfo"])
    assert written.SerializeToString(deterministic=True) == reference.SerializeToString(deterministic=True)
    assert weights == reference_weights
    block = next(iter(written.mlProgram.functions["main"].block_specializations.values()))
    ops = {op.type for op in block.operations}
    assert ("classify" in ops) == bool(classes)
    assert ("quantize" in ops) == (coreml_options.int8_activations and quantization is not None)


def test_weight_file_layout_is_read_back_by_coremltools(tmp_path):
    """The weight file as coremltools' own reader (milstorage) reads it."""
    result = compile_spec(SPECS / "v2.mnet", target="coreml", alpha=0.35, resolution=64, out_dir=tmp_path)
    from coremltools.libmilstoragepython import _BlobStorageReader

    path = result.artifact / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    reader = _BlobStorageReader(str(path))
    spec, _ = _written(result.artifact)
    block = next(iter(spec.mlProgram.functions["main"].block_specializations.values()))
    blobs = [
        op.attributes["val"]
        for op in block.operations
        if op.type == "const" and op.attributes["val"].HasField("blobFileValue")
    ]
    assert len(blobs) > 10
    for value in blobs:
        data = np.asarray(reader.read_fp16_data(value.blobFileValue.offset))
        assert data.size == np.prod([d.constant.size for d in value.type.tensorType.dimensions])
