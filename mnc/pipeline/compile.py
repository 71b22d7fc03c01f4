"""The two things mnc does with a spec: compile it (build, optimise, emit, verify the saved
artifact, and only then install it with its report) and re-verify an artifact it wrote. Both take
a BuildRequest and check the artifact on one path (check_artifact). Every target-specific decision
is the Target's (mnc/backends/target.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mnc.artifact import ArtifactRecord
from mnc.backends import get_target, target_of, target_options
from mnc.backends.target import INPUT_NAME, NetworkFacts, Target, check_classifier, output_names
from mnc.errors import InputError, VerificationError, param
from mnc.frontend import load_spec, load_spec_text
from mnc.frontend.anchors import SUFFIX as ANCHORS_SUFFIX
from mnc.frontend.anchors import anchors_json
from mnc.io import digest, output_error, publish, staged, write_atomic
from mnc.ir.cost import graph_cost
from mnc.ir.graph import Graph
from mnc.parallel import background_pool, numpy_settings
from mnc.passes.manager import resolve_pipeline, run_pipeline
from mnc.passes.rewrites import run_rewrites
from mnc.pipeline.build import Built, build
from mnc.pipeline.quantize import PASS as QUANTIZE_PASS
from mnc.pipeline.quantize import quantize, quantize_as_recorded
from mnc.pipeline.report import (
    REPORT_SUFFIX,
    ArtifactFile,
    Report,
    SpecSource,
    Tensor,
    Verified,
    VerifiedSpec,
    WeightsSource,
    report_bytes,
)
from mnc.pipeline.request import BuildRequest, as_request
from mnc.quant.data import load_calibration
from mnc.quant.debug import LayerError, layer_errors
from mnc.verification.check import FLOAT16_MAX, start_reference, verify_float, verify_int8
from mnc.verification.constants import check_constants
from mnc.verification.result import FloatVerification, Int8Verification
from mnc.version import __version__
from mnc.weights.save import weights_bytes


@dataclass
class CompileResult:
    artifact: Path
    report_path: Path
    report: dict  # the report as written beside the artifact (JSON values)
    typed: Report  # the same report, typed


def artifact_name(spec_path: str, built: Built, target: Target) -> str:
    return f"{Path(spec_path).stem}_{built.config.alpha}_{built.config.resolution}{target.suffix}"


def record_of(built: Built, passes: list[str], **fields) -> ArtifactRecord:
    """The record an artifact carries: how to rebuild its reference."""
    from_file = "sha256" in built.weights
    return ArtifactRecord(
        version=__version__,
        spec_name=built.spec.settings.name,
        spec_sha256=built.spec.sha256,
        spec_text=built.spec.text,
        alpha=built.config.alpha,
        resolution=built.config.resolution,
        classes=built.config.classes,
        seed=built.seed,
        passes=tuple(passes),
        weights_sha256=built.weights["sha256"] if from_file else None,
        weights_layout=built.weights["layout"] if from_file else None,
        **fields,
    )


def pass_options(target: Target, pipeline: list[str]) -> dict[str, dict]:
    """What the target asks of the passes: which activations fuse_act may fold into a conv/fc."""
    return {"fuse_act": {"activations": target.fused_activations}} if "fuse_act" in pipeline else {}


def network_facts(built: Built) -> NetworkFacts:
    s = built.spec.settings
    return NetworkFacts(
        classes=built.config.classes,
        mean=tuple(s.mean),
        std=tuple(s.std),
        description={
            "short_description": s.description,
            "author": s.author,
            "license": s.license,
            "version": s.version,
        },
    )


def _float_passes(request: BuildRequest) -> list[str]:
    """The passes before any quantisation: with `quantization` the quantize pass always runs, last."""
    pipeline = resolve_pipeline(request.passes)
    if QUANTIZE_PASS in pipeline and request.quantization is None:
        raise InputError(
            f"{param('passes', QUANTIZE_PASS)}: int8 quantisation runs with "
            f"{param('quantize', 'int8')} {param('calib', metavar='DATA')}, "
            "which calibrates the activation ranges it needs"
        )
    return [p for p in pipeline if p != QUANTIZE_PASS]


@numpy_settings
def compile_spec(spec, /, out_dir: str | Path = "build", *, save_weights=None, **fields) -> CompileResult:
    """Build, optimise, [quantise,] write, verify the saved artifact, and only then install it with
    its report under out_dir. Takes a BuildRequest, or a spec and its fields as keywords."""
    request = as_request(spec, fields)
    backend = get_target(request.target)
    pipeline = _float_passes(request)
    built = build(request)
    timings = built.timings
    if request.options.given.get("labels"):
        check_classifier(built.graph)
    facts = network_facts(built)
    opts = target_options(backend, request.options, facts)
    plan = backend.int8_plan(opts) if request.quantization is not None else None
    record = record_of(built, pipeline, **backend.record_fields(opts))
    out = Path(out_dir) / artifact_name(str(request.spec), built, backend)
    settings, resolution_px = built.spec.settings, built.config.resolution
    quantized = None
    # Decided before the long work: a spec whose anchors do not fit its outputs fails at once.
    anchor_boxes = anchors_json(built.graph, settings.anchors, resolution_px) if settings.anchors else None
    with background_pool() as pool:
        reference_future = None if plan else start_reference(built.graph, settings, resolution_px, built.seed, pool)
        with timings.stage("passes"):
            optimised, pass_records = run_pipeline(built.graph, pipeline, options=pass_options(backend, pipeline))
        emitted = optimised
        if reference_future is not None and record.precision == "fp16":
            reference_future.interpret(optimised)  # for the passes check, beside the writing
        if plan is not None:
            quantized = quantize(optimised, built, request.quantization, plan)
            emitted, pass_records = quantized.graph, pass_records + quantized.records
            record = replace(
                record,
                passes=(*pipeline, QUANTIZE_PASS),
                quantization=plan.scheme,
                calibration=quantized.calibration,
                weight_bits=plan.weight_bits,
                depthwise_weight_bits=plan.depthwise_weight_bits,
                int8_activations=plan.activations,
                activation_ranges=quantized.ranges,
                bias_corrections=quantized.bias_corrections,
                equalization=quantized.equalization,
            )
        if record.precision == "fp16":
            _check_float16_range(emitted)
        with staged(out) as tmp:
            with timings.stage("emit"):
                # What the target's runtime needs rewritten, checked region by region.
                lowered, rewrite_records = run_rewrites(emitted, backend.rewrites(record, facts), target=backend.name)
                try:
                    build_facts = backend.write(lowered, tmp, record, opts)
                except OSError as exc:
                    raise output_error(out, exc) from None
            verification = check_artifact(
                tmp,
                backend,
                built,
                record,
                optimised,
                emitted,
                lowered,
                reference_future=reference_future,
                calibration_sample=quantized.sample if quantized is not None else None,
            )
            if not verification.passed:
                raise VerificationError(verification.failure(out.name))
            size, sha256 = digest(tmp)
            weights = WeightsSource(**built.weights)
            if save_weights is not None:
                meta = record_of(built, list(record.passes)).to_metadata(with_spec_text=False)
                write_atomic(Path(save_weights), weights_bytes(built.graph, meta))
                weights = replace(weights, saved_to=str(save_weights))
            companions = backend.companions(tmp)
            anchors = None
            if settings.anchors is not None:
                boxes = tmp.with_name(tmp.name + ANCHORS_SUFFIX)
                write_atomic(boxes, anchor_boxes)
                companions.append(boxes)
                anchors = str(out.with_name(boxes.name))
            cost = graph_cost(built.graph)
            report = Report(
                mnc_version=__version__,
                spec=SpecSource(str(built.spec.path), settings.name, built.spec.sha256),
                alpha=built.config.alpha,
                resolution=resolution_px,
                rho=round(built.config.rho, 6),
                classes=built.config.classes,
                seed=built.seed,
                target=backend.name,
                weights=weights,
                passes=pass_records,
                rewrites=rewrite_records or None,
                macs=cost.macs,
                params=cost.params,
                artifact=_artifact_file(built.graph, optimised, backend, out, size, sha256, anchors, record.batch),
                verification=verification,
                quantization=quantized.info if quantized is not None else None,
                target_section={**(backend.report_fields(opts) or {}), **(build_facts or {})} or None,
                timings_s=timings.as_dict(),
            )
            report_path = out.with_name(out.name + REPORT_SUFFIX)
            written = report.as_dict()
            publish(tmp, out, report_path, report_bytes(written), companions)
    return CompileResult(out, report_path, written, report)


def _check_float16_range(graph: Graph) -> None:
    """A float16 artifact holds its weights in float16: one beyond float16's range would be infinite."""
    for name in graph.topo():
        node = graph.node(name)
        for slot, value in node.params.items():
            with np.errstate(over="ignore"):
                beyond = np.isinf(np.asarray(value).astype(np.float16)) & np.isfinite(value)
            if beyond.any():
                raise InputError(
                    f"{param('precision', 'fp16')}: layer '{name}' has {slot} values up to "
                    f"{float(np.abs(value).max()):.3g}, beyond float16's largest {FLOAT16_MAX:g}; "
                    f"{param('precision', 'fp32')} keeps them",
                    node.src,
                )


def _artifact_file(
    graph: Graph,
    optimised: Graph,
    target: Target,
    out: Path,
    size: int,
    sha256: str,
    anchors: str | None,
    batch: int | None,
) -> ArtifactFile:
    def tensor(node: str, name: str) -> Tensor:
        return Tensor(name, ["batch" if batch is None else batch, *target.layout(graph.node(node).shape)])

    outputs = [tensor(node, name) for node, name in zip(graph.outputs, output_names(optimised))]
    return ArtifactFile(
        str(out), size, sha256, tensor(graph.inputs[0], INPUT_NAME), outputs[0], outputs, anchors=anchors
    )


def check_artifact(
    path: Path,
    target: Target,
    built: Built,
    record: ArtifactRecord | None,
    optimised: Graph | None,
    emitted: Graph | None,
    lowered: Graph | None,
    *,
    reference_future=None,
    calibration_sample=None,
) -> FloatVerification | Int8Verification:
    """Run a saved artifact and compare it with the reference of `built` (compile and verify both
    come here): an int8 one against mnc's fake-quant interpreter of the quantised IR (`emitted`),
    a float one element-wise; then its constants against the IR it was lowered from (`lowered`:
    `emitted` after the target's rewrites), which also gives the names the checks of its layers
    look for. `record` None: an artifact mnc did not build, checked as an fp32 one, without its
    constants."""
    settings, resolution, seed = built.spec.settings, built.config.resolution, built.seed
    image_input = bool(record is not None and record.image_input)
    if record is not None and record.quantized:
        verification = verify_int8(
            path,
            target,
            built.graph,
            emitted,
            optimised,
            settings,
            resolution,
            seed,
            activations=record.int8_activations is not False,
            image_input=image_input,
            timings=built.timings,
            calibration_sample=calibration_sample,
            lowered=lowered,
        )
    else:
        verification = verify_float(
            path,
            target,
            built.graph,
            settings,
            resolution,
            seed,
            precision=(record.precision if record is not None else None) or "fp32",
            image_input=image_input,
            reference_future=reference_future,
            timings=built.timings,
            emitted=emitted,
            lowered=lowered,
        )
    if record is not None:
        verification.constants = check_constants(target, path, lowered, record)
    return verification


def _rebuilt(built: Built, target: Target, record: ArtifactRecord | None) -> tuple[Graph | None, ...]:
    """The optimised IR, the IR an artifact was emitted from (quantised with its recorded ranges
    where it is int8) and the IR it was lowered from (after its target's rewrites), from its record;
    (None, None, None) without one."""
    if record is None:
        return None, None, None
    passes = [p for p in record.passes if p != QUANTIZE_PASS]
    optimised, _ = run_pipeline(built.graph, passes, options=pass_options(target, passes))
    emitted = quantize_as_recorded(optimised, record) if record.quantized else optimised
    lowered, _ = run_rewrites(emitted, target.rewrites(record, network_facts(built)), target=target.name)
    return optimised, emitted, lowered


@numpy_settings
def verify_file(artifact_path: str | Path, request: BuildRequest | None = None) -> Verified:
    """Re-check an artifact against the reference rebuilt from its spec. What the request leaves
    None (its spec, α, ρ or resolution, classes, seed) comes from the artifact's own record.
    Raises VerificationError if it fails."""
    path, target, record, built, optimised, emitted, lowered = _from_artifact(artifact_path, request)
    verification = check_artifact(path, target, built, record, optimised, emitted, lowered)
    if not verification.passed:
        raise VerificationError(verification.failure(str(path)))
    spec = built.spec
    return Verified(
        verification=verification,
        artifact=str(path),
        spec=VerifiedSpec(str(spec.path), spec.sha256, record is not None and record.spec_sha256 == spec.sha256),
        alpha=built.config.alpha,
        resolution=built.config.resolution,
        classes=built.config.classes,
        seed=built.seed,
        weights=WeightsSource(**built.weights),
    )


def _from_artifact(artifact_path: str | Path, request: BuildRequest | None):
    """(path, target, record, built network, optimised, emitted and lowered IR) an artifact is checked
    against."""
    path = Path(artifact_path)
    target = target_of(path)
    if not path.exists():
        raise InputError(f"cannot read artifact '{path}': no such file or directory")
    record = ArtifactRecord.from_metadata(target.read_metadata(path), str(path))
    request = _recorded(request or BuildRequest(None), record, path)
    built = build(request)
    optimised, emitted, lowered = _rebuilt(built, target, record)
    return path, target, record, built, optimised, emitted, lowered


@numpy_settings
def int8_layer_errors(
    artifact_path: str | Path, calib: str, samples: int, request: BuildRequest | None = None
) -> list[LayerError]:
    """Each quantised layer of an int8 artifact's IR against fp32 on calibration data (the first
    `samples` of it, chosen with the artifact's seed): mnc/quant/debug.py."""
    path, _, record, built, _, emitted, _ = _from_artifact(artifact_path, request)
    if record is None or not record.quantized:
        raise InputError(f"{param('layers')} is for int8 artifacts; '{path}' is not quantised")
    if not record.int8_activations:
        raise InputError(f"{param('layers')} is for int8 activations; '{path}' has int8 weights only")
    data, _ = load_calibration(calib, built.spec.settings, built.config.resolution, samples, built.seed)
    return layer_errors(emitted, data)


def _recorded(request: BuildRequest, record: ArtifactRecord | None, path: Path) -> BuildRequest:
    """The request with what it leaves open taken from the artifact's record."""
    if request.spec is not None:
        spec = load_spec(request.spec)
    elif record is not None:
        spec = load_spec_text(record.spec_text, f"{path}#spec")
    else:
        raise InputError(f"'{path}' carries no spec (it was not built by mnc); give one with {param('spec')}")
    if record is None:
        return replace(request, spec=spec)
    if request.weights is None and record.weights_sha256:
        raise InputError(
            f"'{path}' was built from a weights file (sha256 {record.weights_sha256[:16]}…, "
            f"layout {record.weights_layout}); give the same file with {param('weights')}"
        )
    return replace(
        request,
        spec=spec,
        resolution=record.resolution if request.resolution is None and request.rho is None else request.resolution,
        alpha=record.alpha if request.alpha is None else request.alpha,
        classes=record.classes if request.classes is None else request.classes,
        seed=record.seed if request.seed is None else request.seed,
    )
