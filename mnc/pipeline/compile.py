"""The two things mnc does with a spec: compile it (build, optimise, emit, verify the saved
artifact, and only then install it with its report) and re-verify an artifact it wrote. Every
target-specific decision is the Target's (mnc/backends/target.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from mnc.artifact import ArtifactRecord
from mnc.backends import get_target, target_of, target_options
from mnc.backends.target import INPUT_NAME, NetworkFacts, Target, TargetOptions, check_classifier, output_names
from mnc.errors import InputError, VerificationError
from mnc.frontend import load_spec, load_spec_text
from mnc.frontend.anchors import SUFFIX as ANCHORS_SUFFIX
from mnc.frontend.anchors import anchors_json
from mnc.io import digest, output_error, publish, staged, write_atomic
from mnc.ir.cost import graph_cost
from mnc.ir.graph import Graph
from mnc.parallel import background_pool, single_threaded_blas
from mnc.passes.manager import resolve_pipeline, run_pipeline
from mnc.pipeline.build import Built, build
from mnc.pipeline.quantize import PASS as QUANTIZE_PASS
from mnc.pipeline.quantize import Quantization, quantize, quantize_with_ranges
from mnc.verification.check import start_reference, verify_float, verify_int8
from mnc.verification.constants import check_constants
from mnc.version import __version__
from mnc.weights.save import weights_bytes

REPORT_SUFFIX = ".report.json"  # beside the artifact, named after it: every artifact keeps its own


def report_bytes(report: dict) -> bytes:
    """A report as written beside its artifact."""
    return (json.dumps(report, indent=2) + "\n").encode()


@dataclass
class CompileResult:
    artifact: Path
    report_path: Path
    report: dict


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


@single_threaded_blas
def compile_spec(
    spec_path: str | Path,
    *,
    target: str | None = None,
    alpha=None,
    rho=None,
    resolution=None,
    classes=None,
    seed: int = 0,
    weights=None,
    weights_layout=None,
    save_weights=None,
    out_dir: str | Path = "build",
    passes: str = "default",
    options: TargetOptions | None = None,
    quantization: Quantization | None = None,
    max_memory: int | None = None,
) -> CompileResult:
    backend = get_target(target)
    pipeline = resolve_pipeline(passes)
    if QUANTIZE_PASS in pipeline and quantization is None:
        raise InputError(
            f"--passes {QUANTIZE_PASS}: int8 quantisation runs with --quantize int8 --calib DATA, "
            "which calibrates the activation ranges it needs"
        )
    pipeline = [p for p in pipeline if p != QUANTIZE_PASS]  # with --quantize it always runs, last
    built = build(
        spec_path,
        alpha=alpha,
        rho=rho,
        resolution=resolution,
        classes=classes,
        seed=seed,
        weights=weights,
        weights_layout=weights_layout,
        max_memory=max_memory,
    )
    timings = built.timings
    if (options or TargetOptions()).given.get("labels"):
        check_classifier(built.graph)
    opts = target_options(backend, options or TargetOptions(), network_facts(built))
    plan = backend.int8_plan(opts) if quantization is not None else None
    record = record_of(built, pipeline, **backend.record_fields(opts))
    out = Path(out_dir) / artifact_name(str(spec_path), built, backend)
    settings, resolution_px = built.spec.settings, built.config.resolution
    quantized = None
    # Decided before the long work: a spec whose anchors do not fit its outputs fails at once.
    anchor_boxes = anchors_json(built.graph, settings.anchors, resolution_px) if settings.anchors else None
    with background_pool() as pool:
        reference_future = None if plan else start_reference(built.graph, settings, resolution_px, seed, pool)
        with timings.stage("passes"):
            optimised, pass_records = run_pipeline(built.graph, pipeline, options=pass_options(backend, pipeline))
        emitted = optimised
        if plan is not None:
            quantized = quantize(optimised, built, quantization, plan)
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
            )
        with staged(out) as tmp:
            with timings.stage("emit"):
                try:
                    build_facts = backend.write(emitted, tmp, record, opts)
                except OSError as exc:
                    raise output_error(out, exc) from None
            if plan is None:
                verification = verify_float(
                    tmp,
                    backend,
                    built.graph,
                    settings,
                    resolution_px,
                    seed,
                    precision=record.precision or "fp32",
                    image_input=bool(record.image_input),
                    reference_future=reference_future,
                    timings=timings,
                    emitted=emitted,
                )
            else:
                verification = verify_int8(
                    tmp,
                    backend,
                    built.graph,
                    emitted,
                    optimised,
                    settings,
                    resolution_px,
                    seed,
                    activations=plan.activations,
                    image_input=bool(record.image_input),
                    timings=timings,
                    calibration_sample=quantized.sample,
                )
            verification.constants = check_constants(backend, tmp, emitted, record)
            if not verification.passed:
                raise VerificationError(verification.failure(out.name))
            size, sha256 = digest(tmp)
            report = _report(built, backend, pass_records, out, size, sha256, verification.as_dict(), optimised)
            if quantized is not None:
                report["quantization"] = quantized.info
            target_section = {**(backend.report_fields(opts) or {}), **(build_facts or {})}
            if target_section:
                report[backend.name] = target_section
            if save_weights is not None:
                meta = record_of(built, list(record.passes)).to_metadata(with_spec_text=False)
                write_atomic(Path(save_weights), weights_bytes(built.graph, meta))
                report["weights"]["saved_to"] = str(save_weights)
            report["timings_s"] = timings.as_dict()
            report_path = out.with_name(out.name + REPORT_SUFFIX)
            companions = backend.companions(tmp)
            if settings.anchors is not None:
                boxes = tmp.with_name(tmp.name + ANCHORS_SUFFIX)
                write_atomic(boxes, anchor_boxes)
                companions.append(boxes)
                report["artifact"]["anchors"] = str(out.with_name(boxes.name))
            publish(tmp, out, report_path, report_bytes(report), companions)
    return CompileResult(out, report_path, report)


def _report(
    built: Built,
    target: Target,
    passes: list[dict],
    out: Path,
    size: int,
    sha256: str,
    verification: dict,
    optimised: Graph,
) -> dict:
    cost = graph_cost(built.graph)
    s, config, graph = built.spec.settings, built.config, built.graph
    outputs = [
        {"name": name, "shape": ["batch", *target.layout(graph.node(node).shape)]}
        for node, name in zip(graph.outputs, output_names(optimised))
    ]
    return {
        "mnc_version": __version__,
        "spec": {"path": str(built.spec.path), "name": s.name, "sha256": built.spec.sha256},
        "alpha": config.alpha,
        "resolution": config.resolution,
        "rho": round(config.rho, 6),
        "classes": config.classes,
        "seed": built.seed,
        "target": target.name,
        "weights": dict(built.weights),
        "passes": passes,
        "macs": cost.macs,
        "params": cost.params,
        "artifact": {
            "path": str(out),
            "size_bytes": size,
            "sha256": sha256,
            "input": {"name": INPUT_NAME, "shape": ["batch", *target.layout(graph.node(graph.inputs[0]).shape)]},
            # "output": the first (for a classifier, the only) one; "outputs": every one, in order.
            "output": outputs[0],
            "outputs": outputs,
        },
        "verification": verification,
    }


@single_threaded_blas
def verify_file(
    artifact_path: str | Path,
    *,
    spec_path: str | Path | None = None,
    alpha=None,
    rho=None,
    resolution=None,
    classes=None,
    seed: int | None = None,
    weights=None,
    weights_layout=None,
    max_memory: int | None = None,
) -> dict:
    """Re-check an artifact against the reference rebuilt from its spec. Settings the caller
    does not give come from the artifact's own record. Returns the verification section,
    with the settings used; raises VerificationError if it fails."""
    path = Path(artifact_path)
    target = target_of(path)
    if not path.exists():
        raise InputError(f"cannot read artifact '{path}': no such file or directory")
    record = ArtifactRecord.from_metadata(target.read_metadata(path), str(path))
    if spec_path is not None:
        spec = load_spec(spec_path)
    elif record is not None:
        spec = load_spec_text(record.spec_text, f"{path}#spec")
    else:
        raise InputError(f"'{path}' carries no spec (it was not built by mnc); give one with --spec")
    if record is not None:
        if resolution is None and rho is None:
            resolution = record.resolution
        alpha = record.alpha if alpha is None else alpha
        classes = record.classes if classes is None else classes
        seed = record.seed if seed is None else seed
        if weights is None and record.weights_sha256:
            raise InputError(
                f"'{path}' was built from a weights file (sha256 {record.weights_sha256[:16]}…, "
                f"layout {record.weights_layout}); give the same file with --weights"
            )
    seed = seed or 0
    built = build(
        spec,
        alpha=alpha,
        rho=rho,
        resolution=resolution,
        classes=classes,
        seed=seed,
        weights=weights,
        weights_layout=weights_layout,
        max_memory=max_memory,
    )
    settings, res = built.spec.settings, built.config.resolution
    if record is not None and record.quantized:  # int8: rebuild the quantised IR from the recorded ranges
        passes = [p for p in record.passes if p != QUANTIZE_PASS]
        optimised, _ = run_pipeline(built.graph, passes, options=pass_options(target, passes))
        emitted, _ = quantize_with_ranges(
            optimised, record.activation_ranges, record.weight_bits or 8, record.depthwise_weight_bits
        )
        activations = record.int8_activations is not False
        verification = verify_int8(
            path,
            target,
            built.graph,
            emitted,
            optimised,
            settings,
            res,
            seed,
            activations=activations,
            image_input=bool(record.image_input),
        )
    else:
        emitted = None
        if record is not None:  # the IR the artifact was emitted from, for its constants
            passes = list(record.passes)
            emitted, _ = run_pipeline(built.graph, passes, options=pass_options(target, passes))
        verification = verify_float(
            path,
            target,
            built.graph,
            settings,
            res,
            seed,
            precision=(record.precision if record else None) or "fp32",
            image_input=bool(record and record.image_input),
            emitted=emitted,
        )
    if record is not None:
        verification.constants = check_constants(target, path, emitted, record)
    result = verification.as_dict()
    result.update(
        {
            "artifact": str(path),
            "spec": {
                "path": str(spec.path),
                "sha256": spec.sha256,
                "matches_artifact": record is not None and record.spec_sha256 == spec.sha256,
            },
            "alpha": built.config.alpha,
            "resolution": built.config.resolution,
            "classes": built.config.classes,
            "seed": seed,
            "weights": built.weights,
        }
    )
    if not verification.passed:
        raise VerificationError(verification.failure(str(path)))
    return result
