"""The library API behind the CLI: build a spec into a weighted IR graph, emit an artifact,
verify it numerically, write it with its report. Each step reads only what the one before made."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path


from mnc import __version__
from mnc.backends import TARGETS
from mnc.errors import InputError, Loc, VerificationError
from mnc.io import write_atomic
from mnc.ir.cost import graph_cost
from mnc.ir.graph import Graph
from mnc.passes.manager import resolve_pipeline, run_pipeline
from mnc.spec import CheckedSpec, Config, build_graph, load_spec, load_spec_text
from mnc.timing import Timings
from mnc.verify import reference
from mnc.verify.executors import EXECUTORS
from mnc.verify.inputs import STREAM_VERIFICATION, sample_images
from mnc.verify.metrics import FP32, compare
from mnc.weights.files import WeightsFile, read_weights
from mnc.weights.init import init_weights
from mnc.weights.layouts import Layout, choose_layout
from mnc.weights.load import WeightsMismatch, expected_shapes, load_weights
from mnc.weights.save import weights_bytes

# Width multipliers tried when a checkpoint does not fit, to tell the user which one it does fit.
COMMON_ALPHAS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)

VERIFY_BATCH = 2


@dataclass
class Built:
    spec: CheckedSpec
    config: Config
    graph: Graph
    seed: int
    weights: dict  # where the parameters came from, for the report and the artifact's metadata
    timings: Timings = field(default_factory=Timings)


def build(spec: CheckedSpec | str | Path, *, alpha=None, rho=None, resolution=None, classes=None, seed: int = 0,
          weights: str | Path | None = None, weights_layout: str | None = None,
          timings: Timings | None = None) -> Built:
    """Spec → IR graph with α/ρ applied, shapes inferred, and weights: loaded from a checkpoint
    (whose classifier gives the class count unless `classes` is given) or initialised from `seed`."""
    timings = timings or Timings()
    if not isinstance(spec, CheckedSpec):
        with timings.stage("parse"):
            spec = load_spec(spec)
    checkpoint = layout = None
    if weights is not None:
        with timings.stage("read_weights"):
            checkpoint = read_weights(weights)
            layout = choose_layout(set(checkpoint.tensors), weights_layout, Loc.file(checkpoint.path))
        if classes is None:
            classes = layout.classes(checkpoint.tensors)
    config = spec.config(alpha, rho, resolution, classes)
    with timings.stage("lower"):
        graph = build_graph(spec, config)
        graph.validate()
    with timings.stage("weights"):
        if checkpoint is not None:
            try:
                load_weights(graph, checkpoint, layout)
            except WeightsMismatch as exc:
                _add_fit_hint(exc, spec, config, checkpoint, layout)
                raise
            source = {"file": checkpoint.path, "sha256": checkpoint.sha256, "layout": layout.name}
        else:
            init_weights(graph, spec.settings, seed)
            source = {"seed": seed, "init": "He-normal convolutions, batch norm calibrated on seeded images"}
        graph.validate(require_params=True)
    return Built(spec, config, graph, seed, source, timings)


def _add_fit_hint(exc: WeightsMismatch, spec: CheckedSpec, config: Config, checkpoint: WeightsFile,
                  layout: Layout) -> None:
    """If the checkpoint fits another common α exactly, say so: the usual cause of a mismatch."""
    for alpha in COMMON_ALPHAS:
        if alpha == config.alpha:
            continue
        try:
            other = build_graph(spec, spec.config(alpha, resolution=config.resolution, classes=config.classes))
            shapes = expected_shapes(other, layout)
        except InputError:
            continue
        if all(k in checkpoint.tensors and tuple(checkpoint.tensors[k].shape) == s for k, s in shapes.items()):
            exc.diagnostics[0].notes.append(
                (f"these weights fit α = {alpha:g}, and this compile uses α = {config.alpha:g}; "
                 f"pass --alpha {alpha:g}", None))
            return


def artifact_name(spec_path: str, config: Config, target: str) -> str:
    return f"{Path(spec_path).stem}_{config.alpha}_{config.resolution}{TARGETS[target].SUFFIX}"


def metadata(built: Built, passes: list[str]) -> dict[str, str]:
    """What an artifact records so that `mnc verify` can rebuild its reference."""
    return {
        "mnc.version": __version__,
        "mnc.spec_name": built.spec.settings.name,
        "mnc.spec_sha256": built.spec.sha256,
        "mnc.spec_text": built.spec.text,
        "mnc.alpha": repr(built.config.alpha),
        "mnc.resolution": str(built.config.resolution),
        "mnc.classes": str(built.config.classes),
        "mnc.seed": str(built.seed),
        "mnc.passes": ",".join(passes),
        **({"mnc.weights_sha256": built.weights["sha256"], "mnc.weights_layout": built.weights["layout"]}
           if "sha256" in built.weights else {}),
    }


def verify(artifact: bytes, built: Built, target: str) -> dict:
    """Run the artifact on seeded inputs and compare with the reference (built.graph, the
    unoptimised IR). Returns the report's 'verification' section; its 'verdict' says whether
    the artifact passed. The reference is itself compared with the float64 interpreter, and
    a disagreement there fails the check too."""
    label, execute = EXECUTORS[target]
    images = sample_images(built.spec.settings, built.config.resolution, VERIFY_BATCH, built.seed, STREAM_VERIFICATION)
    with built.timings.stage("reference"):
        expected, interpreted = reference.reference_outputs(built.graph, images)
    reference_check = compare(expected, interpreted)
    result = {
        "reference": reference.DESCRIPTION,
        "reference_check": {"against": reference.CHECK_DESCRIPTION, "metrics": reference_check.as_dict(),
                            "verdict": "pass" if reference_check.passes(FP32) else "fail"},
        "executor": label,
        "inputs": f"{VERIFY_BATCH} seeded image-like samples (verification stream)",
        "metrics": None,
        "tolerance": FP32.as_dict(),
        "verdict": "fail",
    }
    with built.timings.stage("execute"):
        try:
            (actual,) = execute(artifact, {"input": images})
        except Exception as exc:  # the runtime rejected the artifact: a failed check, not a crash
            result["error"] = f"{type(exc).__name__}: {exc}"
            return result
    if actual.shape != expected.shape:
        result["error"] = f"output shape {actual.shape} differs from the reference's {expected.shape}"
        return result
    comparison = compare(actual, expected)
    result["metrics"] = comparison.as_dict()
    if comparison.passes(FP32) and reference_check.passes(FP32):
        result["verdict"] = "pass"
    return result


@dataclass
class CompileResult:
    artifact: Path
    report_path: Path
    report: dict


def compile_spec(spec_path: str | Path, *, target: str = "onnx", alpha=None, rho=None, resolution=None,
                 classes=None, seed: int = 0, weights=None, weights_layout=None, save_weights=None,
                 out_dir: str | Path = "build", passes: str = "default") -> CompileResult:
    if target not in TARGETS:
        raise InputError(f"unknown target '{target}'; targets are {', '.join(TARGETS)}")
    pipeline = resolve_pipeline(passes)
    timings = Timings()
    built = build(spec_path, alpha=alpha, rho=rho, resolution=resolution, classes=classes, seed=seed,
                  weights=weights, weights_layout=weights_layout, timings=timings)
    backend = TARGETS[target]
    with timings.stage("passes"):
        optimised, pass_records = run_pipeline(built.graph, pipeline)
    with timings.stage("emit"):
        artifact = backend.emit(optimised, metadata(built, pipeline), built.spec.settings.description)
    verification = verify(artifact, built, target)
    out = Path(out_dir) / artifact_name(str(spec_path), built.config, target)
    report = _report(built, target, pass_records, out, artifact, verification)
    if verification["verdict"] != "pass":
        raise VerificationError(_failure_message(out.name, verification))
    with timings.stage("write"):
        write_atomic(out, artifact)
        if save_weights is not None:
            meta = {k: v for k, v in metadata(built, pipeline).items() if k != "mnc.spec_text"}
            write_atomic(Path(save_weights), weights_bytes(built.graph, meta))
            report["weights"]["saved_to"] = str(save_weights)
    report["timings_s"] = timings.as_dict()
    report_path = out.with_suffix(".report.json")
    write_atomic(report_path, (json.dumps(report, indent=2) + "\n").encode())
    return CompileResult(out, report_path, report)


def _report(built: Built, target: str, passes: list[dict], out: Path, artifact: bytes, verification: dict) -> dict:
    cost = graph_cost(built.graph)
    s, config = built.spec.settings, built.config
    graph = built.graph
    return {
        "mnc_version": __version__,
        "spec": {"path": str(built.spec.path), "name": s.name, "sha256": built.spec.sha256},
        "alpha": config.alpha,
        "resolution": config.resolution,
        "rho": round(config.rho, 6),
        "classes": config.classes,
        "seed": built.seed,
        "target": target,
        "weights": dict(built.weights),
        "passes": passes,
        "macs": cost.macs,
        "params": cost.params,
        "artifact": {
            "path": str(out),
            "size_bytes": len(artifact),
            "sha256": hashlib.sha256(artifact).hexdigest(),
            "input": {"name": "input", "shape": ["batch", *graph.node(graph.inputs[0])["shape"]]},
            "output": {"name": TARGETS[target].output_name(graph), "shape": ["batch", *graph.node(graph.outputs[0])["shape"]]},
        },
        "verification": verification,
    }


def _failure_message(what: str, verification: dict) -> str:
    m = verification["metrics"]
    check = verification["reference_check"]
    if check["verdict"] != "pass":
        c = check["metrics"]
        return (f"verification of {what} failed: the reference ({verification['reference']}) disagrees with "
                f"{check['against']}: max relative error {c['max_rel_err']:.3g}, cosine {c['cosine']:.6f}")
    if m is None:
        detail = verification.get("error", "no output")
    else:
        t = verification["tolerance"]
        detail = (f"max relative error {m['max_rel_err']:.3g} (tolerance {t['max_rel_err']:g}), "
                  f"cosine {m['cosine']:.6f} (minimum {t['min_cosine']:g})")
    return f"verification of {what} failed against the reference ({verification['reference']}): {detail}"


# ---- verifying an existing artifact --------------------------------------------------------


def verify_file(artifact_path: str | Path, *, spec_path: str | Path | None = None, alpha=None, rho=None,
                resolution=None, classes=None, seed: int | None = None, weights=None,
                weights_layout=None) -> dict:
    """Re-check an artifact against the reference rebuilt from its spec. Settings the caller
    does not give come from the artifact's own metadata. Returns the verification section,
    with the settings used; raises VerificationError if it fails."""
    path = Path(artifact_path)
    target = next((t for t, b in TARGETS.items() if path.name.endswith(b.SUFFIX)), None)
    if target is None:
        raise InputError(f"'{path}': unknown artifact type; expected one of " + ", ".join(b.SUFFIX for b in TARGETS.values()))
    try:
        artifact = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read artifact '{path}': {exc.strerror or exc}") from None
    meta = TARGETS[target].read_metadata(artifact, str(path))
    if spec_path is not None:
        spec = load_spec(spec_path)
    elif "mnc.spec_text" in meta:
        spec = load_spec_text(meta["mnc.spec_text"], f"{path}#spec")
    else:
        raise InputError(f"'{path}' carries no spec (it was not built by mnc); give one with --spec")
    if resolution is None and rho is None and "mnc.resolution" in meta:
        resolution = int(meta["mnc.resolution"])
    if alpha is None and "mnc.alpha" in meta:
        alpha = float(meta["mnc.alpha"])
    if classes is None and "mnc.classes" in meta:
        classes = int(meta["mnc.classes"])
    if seed is None:
        seed = int(meta.get("mnc.seed", 0))
    if weights is None and "mnc.weights_sha256" in meta:
        raise InputError(f"'{path}' was built from a weights file (sha256 {meta['mnc.weights_sha256'][:16]}…, "
                         f"layout {meta.get('mnc.weights_layout')}); give the same file with --weights")
    built = build(spec, alpha=alpha, rho=rho, resolution=resolution, classes=classes, seed=seed,
                  weights=weights, weights_layout=weights_layout)
    result = verify(artifact, built, target)
    result.update({
        "artifact": str(path),
        "spec": {"path": str(spec.path), "sha256": spec.sha256,
                 "matches_artifact": meta.get("mnc.spec_sha256") == spec.sha256},
        "alpha": built.config.alpha, "resolution": built.config.resolution, "classes": built.config.classes,
        "seed": seed, "weights": built.weights,
    })
    if result["verdict"] != "pass":
        raise VerificationError(_failure_message(str(path), result))
    return result


