"""The library API behind the CLI: build a spec into a weighted IR graph, optimise it, emit an
artifact, execute the saved artifact and compare it with the reference, and only then install it
with its report. Each step reads only what the one before made."""
from __future__ import annotations

import json
import multiprocessing
import platform
import sys
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from mnc import __version__
from mnc.backends import TARGETS
from mnc.backends.coreml import (
    DEFAULT_PRECISION,
    DEFAULT_TARGET,
    DEPLOYMENT_TARGETS,
    PRECISIONS,
    CoreMLOptions,
)
from mnc.errors import InputError, Loc, VerificationError
from mnc.io import digest, install, staged, write_atomic
from mnc.ir.cost import graph_cost
from mnc.ir.graph import Graph
from mnc.ir.interpreter import run as interpret
from mnc.passes.manager import resolve_pipeline, run_pipeline
from mnc.quant.calibrate import METHODS as CALIBRATION_METHODS
from mnc.quant.calibrate import activation_ranges
from mnc.quant.data import load_calibration
from mnc.spec import CheckedSpec, Config, build_graph, load_spec, load_spec_text
from mnc.timing import Timings
from mnc.verify import reference
from mnc.verify.executors import EXECUTORS, NATIVE, SPLIT_SAMPLES
from mnc.verify.inputs import STREAM_VERIFICATION, normalise, sample_pixels
from mnc.verify.metrics import FP16, FP32, compare, sqnr
from mnc.weights.files import WeightsFile, read_weights
from mnc.weights.init import init_weights
from mnc.weights.layouts import Layout, choose_layout
from mnc.weights.load import WeightsMismatch, expected_shapes, load_weights
from mnc.weights.save import weights_bytes

VERIFY_BATCH = 2
# Width multipliers tried when a checkpoint does not fit, to tell the user which one it does fit.
COMMON_ALPHAS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


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


# ---- targets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantization:
    """int8 post-training quantisation: where the calibration data comes from and how it is read."""

    calib: str | None = None  # a folder of images, a .npy/.npz array, or "synthetic"
    samples: int = 100
    method: str = "minmax"
    progress: object = None  # progress(done, total) during calibration


def quantize(optimised: Graph, built: Built, q: Quantization, weight_bits: int) -> tuple[Graph, list[dict], dict]:
    """Calibrate on the optimised fp32 graph, then run the quantize_int8 pass."""
    if q.calib is None:
        raise InputError("--quantize int8 needs calibration data: --calib FOLDER|FILE.npy|FILE.npz, "
                         "or --calib synthetic (no real data: accuracy is then not represented)")
    if q.method not in CALIBRATION_METHODS:
        raise InputError(f"--calib-method {q.method}: choose one of {', '.join(CALIBRATION_METHODS)}")
    with built.timings.stage("calibrate"):
        data, described = load_calibration(q.calib, built.spec.settings, built.config.resolution, q.samples,
                                           built.seed)
        ranges = activation_ranges(optimised, data, q.method, q.progress)
    quantized, records = quantize_with_ranges(optimised, ranges, weight_bits)
    info = {"scheme": "int8", "weight_bits": weight_bits, "calibration": described, "method": q.method,
            "samples": len(data), "synthetic": q.calib == "synthetic",
            "bias_overflow_resolved": quantized.meta["bias_overflow_resolved"],
            "activation_ranges": {k: [round(v, 7) for v in r] for k, r in ranges.items()}}
    return quantized, records, info


def quantize_with_ranges(optimised: Graph, ranges: dict, weight_bits: int) -> tuple[Graph, list[dict]]:
    """The quantize_int8 pass on a copy of the optimised graph, with these activation ranges."""
    graph = optimised.copy()
    graph.meta.update(activation_ranges=ranges, weight_bits=weight_bits)
    return run_pipeline(graph, ["quantize_int8"])


QUANT_VERIFY_BATCH = 16
QUANT_MIN_COSINE = 0.99  # of the artifact against mnc's fake-quant reference
# ONNX Runtime's u8×s8 kernels on x86 without VNNI add two products in int16: they saturate only
# if 255·(|w1| + |w2|) > 32767, i.e. some |w| > 64. The weights are checked against that bound
# (a proof, not a sample). Optimised vs unoptimised runs are also compared and reported: on the
# trained digits network at most 2 LSB apart (0–1.9 % of outputs more than 1 LSB); with 8-bit
# weights, saturated, 68–90 % on V2/V3 networks and SQNR ≤ 10.7 dB. Random-weight networks amplify the kernels'
# ≤ 1-LSB rounding differences with depth (V2 1.0/224: 54 % of outputs, whatever the weight bits),
# so that comparison is reported, not gated.
SATURATION_FREE_MAX_WEIGHT = 64


def verify_quantized(artifact: Path, built: Built, quantized: Graph, optimised_fp32: Graph, target: str = "onnx",
                     activations: bool = True) -> dict:
    """An int8 artifact is compared by SQNR, cosine and top-1, never element-wise: with mnc's
    fake-quant interpreter of the quantised IR (what the artifact must compute, gating; weights only
    where the artifact keeps float activations), and with the fp32 reference (what quantisation
    costs, reported). ONNX artifacts are also checked for int16 saturation (gating) and run with
    ONNX Runtime's optimisations off, to compare its integer kernels with the QDQ graph in float."""
    _, images = verification_inputs(built, QUANT_VERIFY_BATCH)
    with built.timings.stage("reference"):
        expected, interpreted = reference.reference_outputs(built.graph, images)
        fake = interpret(quantized, {quantized.inputs[0]: images}, fake_quant=True, keep=True,
                         quantize_activations=activations)
        fp32 = interpret(optimised_fp32, {optimised_fp32.inputs[0]: images}, keep=True)
    label, execute = EXECUTORS[target]
    with built.timings.stage("execute"):
        (optimised_run,) = _execute(execute, artifact, {"input": images})
    out = quantized.outputs[0]
    vs_fake, vs_fp32 = _quant_metrics(optimised_run, fake[out]), _quant_metrics(optimised_run, expected)
    layers = sorted(((n, sqnr(fp32[n], fake[n])) for n in quantized.topo() if n in fp32), key=lambda kv: kv[1])
    check = compare(expected, interpreted)
    extra, saturation_free = {}, True
    if target == "onnx":
        extra, saturation_free = _onnx_int8_checks(artifact, quantized, images, optimised_run)
    passed = vs_fake["cosine"] >= QUANT_MIN_COSINE and saturation_free and check.passes(FP32)
    return {
        "reference": ("mnc fake-quant interpreter of the quantised IR" + ("" if activations else ", int8 weights only")
                      + " (gating); " + reference.DESCRIPTION + " (reported)"),
        "reference_check": {"against": reference.CHECK_DESCRIPTION, "metrics": check.as_dict(),
                            "verdict": "pass" if check.passes(FP32) else "fail"},
        "executor": label,
        "inputs": f"{QUANT_VERIFY_BATCH} seeded image-like samples (verification stream)",
        "metrics": vs_fake,
        "versus_fp32": vs_fp32,
        **extra,
        "worst_layers_sqnr_db": [{"layer": n, "sqnr_db": round(v, 2)} for n, v in layers[:5]],
        "tolerance": {"min_cosine_vs_fake_quant": QUANT_MIN_COSINE,
                      "max_weight_magnitude": SATURATION_FREE_MAX_WEIGHT, "precision": "int8"},
        "verdict": "pass" if passed else "fail",
    }


def _onnx_int8_checks(artifact: Path, quantized: Graph, images: np.ndarray, optimised_run: np.ndarray):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    (plain_run,) = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"]).run(
        None, {"input": images})
    lsb = quantized.node(quantized.outputs[0])["qparams"]["output"]["scale"]
    lsb_off = np.round(np.abs(optimised_run - plain_run) / lsb)
    largest = max((int(np.abs(q["weight"]["q"].astype(np.int32)).max()) for q in
                   (quantized.node(n).get("qparams") or {} for n in quantized.nx) if "weight" in q), default=0)
    saturation_free = largest <= SATURATION_FREE_MAX_WEIGHT
    return {
        "saturation": {"largest_weight": largest, "bound": SATURATION_FREE_MAX_WEIGHT,
                       "verdict": "pass" if saturation_free else "fail",
                       "why": "u8×s8 pair sums stay within int16 when every |weight| ≤ 64"},
        "optimised_vs_unoptimised_onnxruntime": {"max_lsb": float(lsb_off.max()),
                                                 "fraction_over_1_lsb": float((lsb_off > 1).mean()),
                                                 "sqnr_db": round(sqnr(plain_run, optimised_run), 2)},
    }, saturation_free


def _quant_metrics(actual: np.ndarray, expected: np.ndarray) -> dict:
    c = compare(actual, expected)
    return {"sqnr_db": round(sqnr(expected, actual), 2), "cosine": c.cosine, "top1_agreement": c.top1_agreement}


@dataclass(frozen=True)
class TargetOptions:
    """What the command line says about the artifact itself (Core ML only, for now)."""

    precision: str | None = None
    deployment_target: str | None = None
    image_input: bool = False
    labels: str | None = None  # a file with one label per line


def backend_options(target: str, options: TargetOptions, built: Built):
    s = built.spec.settings
    coreml_only = {"--precision": options.precision, "--deployment-target": options.deployment_target,
                   "--image-input": options.image_input or None, "--labels": options.labels}
    if target != "coreml":
        given = [flag for flag, value in coreml_only.items() if value is not None]
        if given:
            raise InputError(f"{', '.join(given)}: only for --target coreml")
    precision = options.precision or DEFAULT_PRECISION
    deployment = options.deployment_target or DEFAULT_TARGET
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if deployment not in DEPLOYMENT_TARGETS:
        raise InputError(f"--deployment-target {deployment}: choose one of {', '.join(DEPLOYMENT_TARGETS)}")
    labels = _read_labels(options.labels, built.config.classes) if options.labels else None
    return CoreMLOptions(
        precision=precision, deployment_target=deployment, image_input=options.image_input, labels=labels,
        mean=tuple(s.mean), std=tuple(s.std),
        metadata={"short_description": s.description, "author": s.author, "license": s.license,
                  "version": s.version},
    )


def _read_labels(path: str, classes: int) -> tuple[str, ...]:
    loc = Loc.file(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read labels '{path}': {getattr(exc, 'strerror', None) or exc}") from None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    for i, label in enumerate(labels):
        if not label:
            raise InputError(f"line {i + 1} is empty; one label per line", Loc(path, i + 1, 1))
    if len(labels) != classes:
        raise InputError(f"{len(labels)} labels for a network with {classes} classes", loc)
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in seen:
            raise InputError(f"label '{label}' appears twice (lines {seen[label]} and {i + 1})", Loc(path, i + 1, 1))
        seen[label] = i + 1
    return tuple(labels)


def artifact_name(spec_path: str, config: Config, target: str) -> str:
    return f"{Path(spec_path).stem}_{config.alpha}_{config.resolution}{TARGETS[target].SUFFIX}"


def metadata(built: Built, passes: list[str], extra: dict | None = None) -> dict[str, str]:
    """What an artifact records so that `mnc verify` can rebuild its reference."""
    meta = {
        "mnc.version": __version__,
        "mnc.spec_name": built.spec.settings.name,
        "mnc.spec_sha256": built.spec.sha256,
        "mnc.spec_text": built.spec.text,
        "mnc.alpha": repr(built.config.alpha),
        "mnc.resolution": str(built.config.resolution),
        "mnc.classes": str(built.config.classes),
        "mnc.seed": str(built.seed),
        "mnc.passes": ",".join(passes),
    }
    if "sha256" in built.weights:
        meta.update({"mnc.weights_sha256": built.weights["sha256"], "mnc.weights_layout": built.weights["layout"]})
    meta.update(extra or {})
    return meta


# ---- verification ----------------------------------------------------------------------------


def verification_inputs(built: Built, batch: int = VERIFY_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(8-bit pixels, their normalised values): what the artifact and the reference are fed."""
    settings = built.spec.settings
    pixels = sample_pixels(settings.input_channels, built.config.resolution, batch, built.seed, STREAM_VERIFICATION)
    return pixels, normalise(settings, pixels)


def _can_fork() -> bool:
    """Fork only where it is safe and pays: on Linux, in a process that has not started ONNX
    Runtime (whose runtime state a child must not inherit) — a fresh `mnc compile`, not a
    long-lived process that has compiled before."""
    return platform.system() == "Linux" and "onnxruntime" not in sys.modules


def background_pool() -> Executor:
    """Where the reference is computed while the passes and the backend run: a forked process
    (the second core, no GIL shared with the backend's Python work) where possible, else a thread."""
    if _can_fork():
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(max_workers=1)


def _execute(execute, artifact: Path, feed: dict) -> list[np.ndarray]:
    """Run an executor; a single-threaded one (SPLIT_SAMPLES) takes half the samples in a forked
    process, so both cores work."""
    ((name, batch),) = feed.items()
    if execute not in SPLIT_SAMPLES or len(batch) < 2 or not _can_fork():
        return execute(artifact, feed)
    half = len(batch) // 2
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        first = pool.submit(execute, artifact, {name: batch[:half]})
        (rest,) = execute(artifact, {name: batch[half:]})
        (head,) = first.result()
    return [np.concatenate([head, rest])]


def start_reference(built: Built, pool: Executor) -> Future:
    """Compute the reference in the background: it needs only the unoptimised graph."""
    _, images = verification_inputs(built)
    return pool.submit(reference.reference_outputs, built.graph, images)


def verify(artifact: Path, built: Built, target: str, *, precision: str = "fp32", image_input: bool = False,
           reference_future: Future | None = None) -> dict:
    """Run the saved artifact on seeded inputs and compare with the reference (built.graph, the
    unoptimised IR). Returns the report's 'verification' section; its 'verdict' says whether the
    artifact passed. The reference is itself compared with the float64 interpreter, and a
    disagreement there fails the check too."""
    tolerance = FP16 if precision == "fp16" else FP32
    pixels, images = verification_inputs(built)
    feed = {"input": pixels if image_input else images}
    with built.timings.stage("reference"):  # with a future: only the time spent waiting for it
        if reference_future is not None:
            expected, interpreted = reference_future.result()
        else:
            expected, interpreted = reference.reference_outputs(built.graph, images)
    reference_check = compare(expected, interpreted)
    result = {
        "reference": reference.DESCRIPTION,
        "reference_check": {"against": reference.CHECK_DESCRIPTION, "metrics": reference_check.as_dict(),
                            "verdict": "pass" if reference_check.passes(FP32) else "fail"},
        "inputs": f"{VERIFY_BATCH} seeded image-like samples (verification stream)"
                  + ("; the artifact is fed 8-bit pixels, the reference their normalised values" if image_input else ""),
        "tolerance": {**tolerance.as_dict(), "precision": precision},
        "runs": [],
        "verdict": "fail",
    }
    executors = [EXECUTORS[target]] + ([NATIVE[target]] if target in NATIVE else [])
    passed = reference_check.passes(FP32)
    for label, execute in executors:
        run = {"executor": label, "metrics": None}
        with built.timings.stage("execute"):
            try:
                (actual,) = _execute(execute, artifact, feed)
            except Exception as exc:  # the runtime rejected the artifact: a failed check, not a crash
                run["error"] = f"{type(exc).__name__}: {exc}"
                actual = None
        if actual is not None and np.shape(actual) != expected.shape:
            run["error"] = f"output shape {np.shape(actual)} differs from the reference's {expected.shape}"
        elif actual is not None:
            comparison = compare(actual, expected)
            run["metrics"] = comparison.as_dict()
            run["verdict"] = "pass" if comparison.passes(tolerance) else "fail"
        passed = passed and run.get("verdict") == "pass"
        result["runs"].append(run)
    first = result["runs"][0]
    result["executor"], result["metrics"] = first["executor"], first["metrics"]  # the main run, at the top level
    if "error" in first:
        result["error"] = first["error"]
    result["verdict"] = "pass" if passed else "fail"
    return result


def _failure_message(what: str, verification: dict) -> str:
    check = verification["reference_check"]
    if check["verdict"] != "pass":
        c = check["metrics"]
        return (f"verification of {what} failed: the reference ({verification['reference']}) disagrees with "
                f"{check['against']}: max relative error {c['max_rel_err']:.3g}, cosine {c['cosine']:.6f}")
    t = verification["tolerance"]
    if "versus_fp32" in verification:  # an int8 artifact
        m, sat = verification["metrics"], verification.get("saturation", {"verdict": "pass"})
        if sat["verdict"] != "pass":
            return (f"verification of {what} failed: a weight of magnitude {sat['largest_weight']} can saturate "
                    f"ONNX Runtime's u8×s8 kernels on x86 hosts without VNNI (bound {sat['bound']})")
        return (f"verification of {what} failed: against mnc's fake-quant reference cosine {m['cosine']:.5f} "
                f"(minimum {t['min_cosine_vs_fake_quant']}), SQNR {m['sqnr_db']} dB")
    for run in verification["runs"]:
        if run.get("verdict") == "pass":
            continue
        if run["metrics"] is None:
            detail = run.get("error", "no output")
        else:
            m = run["metrics"]
            detail = (f"max relative error {m['max_rel_err']:.3g} (tolerance {t['max_rel_err']:g}), "
                      f"cosine {m['cosine']:.6f} (minimum {t['min_cosine']:g})")
        return f"verification of {what} failed against the reference ({verification['reference']}) " \
               f"with {run['executor']}: {detail}"
    return f"verification of {what} failed"


# ---- compiling -------------------------------------------------------------------------------


@dataclass
class CompileResult:
    artifact: Path
    report_path: Path
    report: dict


def single_threaded_blas(function):
    """Run with numpy's BLAS on one thread. mnc overlaps its own stages (the reference runs beside
    the backend); idle OpenBLAS threads spin meanwhile and take the other core (seen: 4.7 CPU-seconds
    for a 3.0 s compile, 2.8 for 2.7 s on one thread)."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return wrapper


@single_threaded_blas
def compile_spec(spec_path: str | Path, *, target: str = "onnx", alpha=None, rho=None, resolution=None,
                 classes=None, seed: int = 0, weights=None, weights_layout=None, save_weights=None,
                 out_dir: str | Path = "build", passes: str = "default",
                 options: TargetOptions = TargetOptions(), quantization: Quantization | None = None) -> CompileResult:
    if target not in TARGETS:
        raise InputError(f"unknown target '{target}'; targets are {', '.join(TARGETS)}")

    pipeline = resolve_pipeline(passes)
    backend = TARGETS[target]
    timings = Timings()
    built = build(spec_path, alpha=alpha, rho=rho, resolution=resolution, classes=classes, seed=seed,
                  weights=weights, weights_layout=weights_layout, timings=timings)
    target_options = backend_options(target, options, built)
    int8_activations = True
    if quantization is not None and target == "coreml":
        from mnc.backends import coreml

        if target_options.deployment_target not in coreml.WEIGHT_INT8_TARGETS:
            raise InputError(f"--quantize int8 for Core ML needs --deployment-target iOS16/macOS13 or later (int8 "
                             f"weights; iOS17/macOS14 for int8 activations), not {target_options.deployment_target}")
        int8_activations = coreml.quantizes_activations(target_options.deployment_target)
    precision = target_options.precision if target == "coreml" else "fp32"
    extra = {"mnc.precision": precision, "mnc.image_input": str(target_options.image_input).lower()} \
        if target == "coreml" else {}
    out = Path(out_dir) / artifact_name(str(spec_path), built.config, target)
    quant_info = None
    with background_pool() as pool:
        reference_future = start_reference(built, pool) if quantization is None else None
        with timings.stage("passes"):
            optimised, pass_records = run_pipeline(built.graph, pipeline)
        emitted = optimised
        if quantization is not None:  # bad calibration data fails here, before anything is written
            emitted, records, quant_info = quantize(optimised, built, quantization, backend.WEIGHT_BITS)
            pass_records += records
            pipeline = [*pipeline, "quantize_int8"]
            scheme_text = backend.QUANTIZATION if target == "onnx" else \
                backend.quantization_scheme(target_options.deployment_target)
            quant_info["scheme"] = scheme_text
            extra = {**extra, "mnc.quantization": scheme_text, "mnc.calibration": quant_info["calibration"],
                     # what `mnc verify` needs to rebuild the same quantised IR
                     "mnc.weight_bits": str(backend.WEIGHT_BITS),
                     "mnc.int8_activations": str(int8_activations).lower(),
                     "mnc.activation_ranges": json.dumps(emitted.meta["activation_ranges"], sort_keys=True)}
        with staged(out) as tmp:
            with timings.stage("emit"):
                backend.write(emitted, tmp, metadata(built, pipeline, extra), target_options)
            if quantization is None:
                verification = verify(tmp, built, target, precision=precision,
                                      image_input=target_options.image_input, reference_future=reference_future)
            else:
                verification = verify_quantized(tmp, built, emitted, optimised, target, int8_activations)
            if verification["verdict"] != "pass":
                raise VerificationError(_failure_message(out.name, verification))
            size, sha256 = digest(tmp)
            with timings.stage("write"):
                install(tmp, out)
    report = _report(built, target, pass_records, out, size, sha256, verification, optimised)
    if quant_info is not None:
        report["quantization"] = quant_info
    if target == "coreml":
        report["coreml"] = {"precision": precision, "deployment_target": target_options.deployment_target,
                            "image_input": target_options.image_input, "labels": len(target_options.labels or ())}
    if save_weights is not None:
        meta = {k: v for k, v in metadata(built, pipeline).items() if k != "mnc.spec_text"}
        write_atomic(Path(save_weights), weights_bytes(built.graph, meta))
        report["weights"]["saved_to"] = str(save_weights)
    report["timings_s"] = timings.as_dict()
    report_path = out.with_name(out.name[: -len(backend.SUFFIX)] + ".report.json")
    write_atomic(report_path, (json.dumps(report, indent=2) + "\n").encode())
    return CompileResult(out, report_path, report)


def _report(built: Built, target: str, passes: list[dict], out: Path, size: int, sha256: str,
            verification: dict, optimised: Graph) -> dict:
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
            "size_bytes": size,
            "sha256": sha256,
            "input": {"name": "input", "shape": ["batch", *graph.node(graph.inputs[0])["shape"]]},
            "output": {"name": TARGETS[target].output_name(optimised),
                       "shape": ["batch", *graph.node(graph.outputs[0])["shape"]]},
        },
        "verification": verification,
    }


# ---- verifying an existing artifact --------------------------------------------------------


@single_threaded_blas
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
    if not path.exists():
        raise InputError(f"cannot read artifact '{path}': no such file or directory")
    meta = TARGETS[target].read_metadata(path, str(path))
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
    if "mnc.activation_ranges" in meta:  # int8: rebuild the quantised IR from the recorded ranges
        passes = [p for p in meta.get("mnc.passes", "").split(",") if p and p != "quantize_int8"]
        optimised, _ = run_pipeline(built.graph, passes)
        quantized, _ = quantize_with_ranges(optimised, json.loads(meta["mnc.activation_ranges"]),
                                            int(meta.get("mnc.weight_bits", 8)))
        result = verify_quantized(path, built, quantized, optimised, target,
                                  meta.get("mnc.int8_activations", "true") == "true")
    else:
        result = verify(path, built, target, precision=meta.get("mnc.precision", "fp32"),
                        image_input=meta.get("mnc.image_input") == "true")
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
