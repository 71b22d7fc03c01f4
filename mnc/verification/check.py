"""Run a saved artifact and compare it with what it must compute. Nothing here names a target:
the target says which executors run its artifacts and which extra int8 checks its runtime needs."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mnc.backends.target import INPUT_NAME, Check, Target, is_classifier
from mnc.ir.graph import Graph
from mnc.ir.interpreter import run as interpret
from mnc.parallel import background_workers, on_two_cores, run_split
from mnc.quant.interpreter import FakeQuantInterpreter
from mnc.quant.sqnr import sqnr
from mnc.timing import Timings
from mnc.verification import reference
from mnc.verification.bounds import TOLERANCE_SIGMAS, exceedance, float16_layer
from mnc.verification.inputs import FLOAT_BATCH, INT8_BATCH, verification_inputs
from mnc.verification.metrics import FP16, FP32, compare
from mnc.verification.result import (
    ExecutorRun,
    FloatVerification,
    Int8Verification,
    ReferenceCheck,
)

FLOAT16_MAX = float(np.finfo(np.float16).max)


class BackgroundReference:
    """The reference computed in parts (each in a worker of its own), and float64 runs of other
    graphs on the same inputs in the same workers (the passes check of an fp16 artifact)."""

    def __init__(self, graph: Graph, images: np.ndarray, pool):
        self.pool, self.images = pool, images
        parts = np.array_split(images, min(len(images), background_workers(pool)))
        self.futures = [pool.submit(reference.reference_outputs, graph, part) for part in parts]
        self.interpretations: list[tuple[Graph, Future]] = []

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return reference.joined_samples([f.result() for f in self.futures])

    def interpret(self, graph: Graph) -> None:
        """Start the float64 run of `graph` on the reference's inputs."""
        self.interpretations.append((graph, self.pool.submit(_interpreted, graph, self.images)))

    def interpreted(self, graph: Graph) -> np.ndarray | None:
        """The float64 run of `graph` started by interpret, or None if none was started."""
        return next((future.result() for started, future in self.interpretations if started is graph), None)


def _interpreted(graph: Graph, images: np.ndarray) -> np.ndarray:
    return reference.joined(interpret(graph, {graph.inputs[0]: images}).values())


def start_reference(graph: Graph, settings, resolution: int, seed: int, pool) -> BackgroundReference:
    """Compute the float reference in the background, its samples split among the pool's workers:
    it needs only the unoptimised graph."""
    _, images = verification_inputs(settings, resolution, seed)
    return BackgroundReference(graph, images, pool)


def verify_float(
    artifact: Path,
    target: Target,
    graph: Graph,
    settings,
    resolution: int,
    seed: int,
    *,
    precision: str = "fp32",
    image_input: bool = False,
    reference_future: BackgroundReference | None = None,
    timings: Timings | None = None,
    emitted: Graph | None = None,
    lowered: Graph | None = None,
) -> FloatVerification:
    """Run the saved artifact with each of its target's executors on seeded inputs and compare with
    the reference (`graph`, the unoptimised IR). The reference is itself compared with the float64
    interpreter, and a disagreement there fails the check too.

    fp16 artifacts (`emitted`: the IR the artifact was emitted from; `lowered`: that IR after its
    target's rewrites, what the artifact's layers are): one that stores float16 weights and computes
    in float32 is compared with the float32 evaluation of the IR with those weights rounded, within
    the derived bound as fp32 artifacts are; one that computes in float16 throughout is checked layer
    by layer against each layer's derived float16 bound, and its whole-network comparison with the
    fp32 reference is reported."""
    timings = timings or Timings()
    pixels, images = verification_inputs(settings, resolution, seed)
    feed = {INPUT_NAME: pixels if image_input else images}
    fp16_graph = target.fp16_weights_graph(emitted) if precision == "fp16" and emitted is not None else None
    checks, layered, layer_checks = [], None, []
    if precision == "fp16" and emitted is not None and fp16_graph is None:
        # The layer check needs no reference: it runs while the reference is being computed.
        with timings.stage("execute"):
            try:
                layered = _float16_layers(target, artifact, lowered or emitted, feed[INPUT_NAME])
            except _Rejected as exc:  # the executor rejected the artifact: a failed check, not a crash
                failure = f"{target.executors()[0].label} could not run it: {exc}"
                layer_checks.append(Check("layers", {"verdict": "fail", "error": failure}, False, failure))
        if layered is not None:
            layer_checks.append(float16_layers_check(layered, target.executors()[0].label))
    executors = target.executors()
    known = {}
    if layered is not None:  # the layer check ran the first executor on every sample: its outputs are that run's
        known[0] = layered.outputs
    with timings.stage("execute"):  # the executors need no reference either
        ran = _run_executors(executors, artifact, feed, known)
    with timings.stage("reference"):  # with a future: only the time spent waiting for it
        if reference_future is not None:
            expected, interpreted, variance = reference_future.result()
        else:
            expected, interpreted, variance = reference.reference_outputs(graph, images)
    if precision == "fp16" and emitted is not None:
        # The fp16 checks start from the IR the artifact was emitted from; that IR itself must
        # compute what the spec does (a wrong pass shows here), as fp32 artifacts show it directly.
        ours = reference_future.interpreted(emitted) if reference_future is not None else None
        checks.append(_passes_check(emitted, images, expected, variance, ours))
    if fp16_graph is not None:
        with timings.stage("reference"):
            expected, interpreted, variance = reference.reference_outputs(fp16_graph, images)
    checks += layer_checks
    # A layer check that could not run (the executor rejected the artifact) has failed already; the
    # whole-network runs are then compared as for any artifact.
    tolerance = FP16 if precision == "fp16" and fp16_graph is None else FP32
    # Both the artifact and the reference are float32 evaluations of the (rounded-weight) network.
    allowed = TOLERANCE_SIGMAS * np.sqrt(2 * variance) if tolerance is FP32 else None
    result = FloatVerification(
        _reference_check(expected, interpreted, variance),
        f"{FLOAT_BATCH} seeded image-like samples (verification stream)"
        + ("; the artifact is fed 8-bit pixels, the reference their normalised values" if image_input else ""),
        tolerance,
        precision,
        checks=checks,
        fp16_weights_only=fp16_graph is not None,
    )
    for i, (executor, (actual, error)) in enumerate(zip(executors, ran)):
        run = ExecutorRun(executor.label, error=error)
        if actual is not None and np.shape(actual) != expected.shape:
            run.error = f"output shape {np.shape(actual)} differs from the reference's {expected.shape}"
        elif actual is not None:
            run.comparison = compare(actual, expected, is_classifier(graph))
            if layered is not None and i == 0:  # the executor checked layer by layer: the whole network is reported
                run.passed = True
            elif allowed is None:
                run.passed = run.comparison.passes(tolerance)
            else:
                run.exceedance = exceedance(actual, expected, allowed)
                run.passed = run.exceedance <= 1 and run.comparison.cosine >= tolerance.min_cosine
        result.runs.append(run)
    return result


def _run_executors(
    executors, artifact: Path, feed: dict, known: dict[int, np.ndarray]
) -> list[tuple[np.ndarray | None, str | None]]:
    """(joined outputs, None) or (None, why it could not run) for each executor (`known`: the outputs
    of those that ran already, by position). One that runs in a child process of its own is started
    first and works beside the others."""

    def run(executor):
        return reference.joined(run_split(executor.run, artifact, feed, executor.split_samples))

    results = []
    with ThreadPoolExecutor() as threads:
        started = {i: threads.submit(run, e) for i, e in enumerate(executors) if e.own_process}
        for i, executor in enumerate(executors):
            if i in known:
                results.append((known[i], None))
                continue
            try:
                results.append((started[i].result() if i in started else run(executor), None))
            except Exception as exc:  # the runtime rejected the artifact: a failed check, not a crash
                results.append((None, f"{type(exc).__name__}: {exc}"))
    return results


def _passes_check(
    emitted: Graph, images: np.ndarray, expected: np.ndarray, variance: np.ndarray, ours: np.ndarray | None
) -> Check:
    """The emitted IR, evaluated in float64 (`ours`, if it was computed in the background), against
    the reference of the unoptimised IR within the derived float32 bound: the optimisation passes
    kept what the network computes."""
    ours = _interpreted(emitted, images) if ours is None else ours
    excess = exceedance(ours, expected, TOLERANCE_SIGMAS * np.sqrt(2 * variance))
    passed = excess <= 1
    return Check(
        "passes",
        {"max_error_over_bound": round(excess, 4), "verdict": "pass" if passed else "fail"},
        passed,
        f"the optimised IR the artifact was emitted from differs from the spec's network ({excess:.3g} times the "
        "float32 rounding error derived for it): an optimisation pass changed what it computes",
    )


class LayerFinding(NamedTuple):
    excess: float  # the layer's largest error over its bound
    peak: float  # its exact values' largest magnitude
    overflowed: bool  # the artifact's values overflowed float16 there


@dataclass
class Float16Layers:
    """What a check of every layer found on some samples (per layer, in order of computation), and
    the artifact's outputs on those samples, joined."""

    found: dict[str, LayerFinding]
    outputs: np.ndarray
    samples: int

    def merged(self, other: Float16Layers) -> Float16Layers:
        found = {
            name: LayerFinding(max(a.excess, b.excess), max(a.peak, b.peak), a.overflowed or b.overflowed)
            for name, a, b in ((n, self.found[n], other.found[n]) for n in self.found)
        }
        return Float16Layers(found, np.concatenate([self.outputs, other.outputs]), self.samples + other.samples)


class _Rejected(Exception):
    """The executor could not run the artifact (a failed check; anything else raised is mnc's bug)."""


def _float16_layers(target: Target, artifact: Path, emitted: Graph, feed: np.ndarray) -> Float16Layers | None:
    """Run the artifact's executor on the feed and check each of its layers, fed the artifact's own
    values, within its derived float16 bound of that layer's exact result (mnc/verification/bounds.py).
    The samples are split between the two cores: each half is run and checked where it was run, and
    only the findings come back. None: the artifact does not compute in float16 throughout."""

    def check(samples: np.ndarray) -> Float16Layers | str | None:
        try:
            layers = target.fp16_layers(artifact, emitted, samples)
        except Exception as exc:  # sent back as words: the exception itself may not pickle
            return f"{type(exc).__name__}: {exc}"
        return None if layers is None else _layer_excesses(*layers, len(samples))

    halves = [check(feed)] if len(feed) < 2 else on_two_cores(check, feed[: len(feed) // 2], feed[len(feed) // 2 :])
    rejected = next((h for h in halves if isinstance(h, str)), None)
    if rejected is not None:
        raise _Rejected(rejected)
    if any(h is None for h in halves):
        return None
    return halves[0] if len(halves) == 1 else halves[0].merged(halves[1])


def _layer_excesses(rounded: Graph, values: dict[str, np.ndarray], samples: int) -> Float16Layers:
    found = {}
    for name in rounded.topo():
        node = rounded.node(name)
        if node.op == "input":
            continue
        params = {k: np.asarray(v, dtype=np.float64) for k, v in node.params.items()}
        xs = [np.asarray(values[p], np.float64) for p in rounded.inputs_of(name)]
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported, not warned about
            exact, allowed = float16_layer(rounded, name, params, xs)
            excess = float((np.abs(values[name] - exact) / allowed).max())
        found[name] = LayerFinding(
            excess if np.isfinite(excess) else np.inf,
            float(np.abs(exact).max()),
            not np.isfinite(values[name]).all(),
        )
    outputs = reference.joined(values[o] for o in rounded.outputs)
    return Float16Layers(found, outputs, samples)


def float16_layers_check(layered: Float16Layers, executor: str) -> Check:
    """Each layer of an artifact that computes in float16 against its derived float16 bound."""
    found = layered.found
    layers = len(found)
    overflowed = [n for n in found if found[n].overflowed]
    worst = ("", 0.0)
    for name in overflowed[:1] or found:  # the first overflow, else the largest excess (the first of equals)
        if found[name].excess > worst[1]:
            worst = (name, found[name].excess)
    passed = worst[1] <= 1
    samples = layered.samples
    return Check(
        "layers",
        {
            "executor": executor,
            "samples": samples,
            "layers": layers,
            "worst_layer": worst[0],
            "max_error_over_bound": round(worst[1], 4) if np.isfinite(worst[1]) else "overflow",
            "bound": "per element: the layer's float32 arithmetic (derived, inputs as the artifact computed them) "
            "plus the rounding of its result to float16 (2⁻¹¹ relative)",
            "verdict": "pass" if passed else "fail",
        },
        passed,
        f"layer '{worst[0]}' overflows float16: its values reach {found[worst[0]].peak:.3g}, beyond float16's largest "
        f"{FLOAT16_MAX:g}; float32 precision keeps them"
        if overflowed
        else f"layer '{worst[0]}' is {worst[1]:.3g} times its derived float16 bound from that layer's exact result",
        f"verified layer by layer in float16: {layers} layers, {samples} samples, at most {worst[1]:.3g} of each "
        "layer's derived bound",
    )


def verify_int8(
    artifact: Path,
    target: Target,
    graph: Graph,
    quantized: Graph,
    optimised: Graph,
    settings,
    resolution: int,
    seed: int,
    *,
    activations: bool = True,
    image_input: bool = False,
    timings: Timings | None = None,
    calibration_sample: np.ndarray | None = None,
    lowered: Graph | None = None,
) -> Int8Verification:
    """Compare an int8 artifact with mnc's fake-quant interpreter of the quantised IR (weights only
    where the artifact keeps float activations) and with the fp32 reference, and run its target's
    own int8 checks (on `lowered`: the quantised IR after the target's rewrites, whose layers the
    artifact has)."""
    timings = timings or Timings()
    pixels, images = verification_inputs(settings, resolution, seed, INT8_BATCH)
    feed = pixels if image_input else images  # what the artifact takes
    with timings.stage("reference"):
        expected, interpreted, variance = reference.reference_outputs(graph, images)
        fake = FakeQuantInterpreter(quantized, activations=activations).run({quantized.inputs[0]: images}, keep=True)
        fp32 = interpret(optimised, {optimised.inputs[0]: images}, keep=True)
    executor = target.executors()[0]
    fake_output = reference.joined(fake[o] for o in quantized.outputs)
    with timings.stage("execute"):
        try:
            output = reference.joined(run_split(executor.run, artifact, {INPUT_NAME: feed}, executor.split_samples))
            problem = (
                None
                if np.shape(output) == fake_output.shape
                else (f"output shape {np.shape(output)} differs from the reference's {fake_output.shape}")
            )
        except Exception as exc:  # the runtime rejected the artifact: a failed check, not a crash
            problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        layers = sorted(((n, sqnr(fp32[n], fake[n])) for n in quantized.topo() if n in fp32), key=lambda kv: kv[1])
        classes = is_classifier(quantized)
        versus_fake = _quant_metrics(output, fake_output, classes)
        versus_fp32 = _quant_metrics(output, expected, classes)
        checks = target.int8_checks(artifact, lowered or quantized, feed, output)
        if calibration_sample is not None and not image_input:  # an image input takes pixels, not these
            with timings.stage("execute"):
                own = reference.joined(
                    run_split(executor.run, artifact, {INPUT_NAME: calibration_sample}, executor.split_samples)
                )
            reference_fp32 = reference.joined(interpret(optimised, {optimised.inputs[0]: calibration_sample}).values())
            versus_fp32["on_calibration_images"] = {
                "samples": len(calibration_sample),
                **_quant_metrics(own, reference_fp32, classes),
            }
    else:
        layers, versus_fake, versus_fp32 = [], _NO_METRICS, _NO_METRICS
        checks = [Check("runtime", {"error": problem}, False, f"{executor.label} could not run it: {problem}")]
    return Int8Verification(
        _reference_check(expected, interpreted, variance),
        activations,
        executor.label,
        f"{INT8_BATCH} seeded image-like samples (verification stream)",
        versus_fake,
        versus_fp32,
        checks,
        layers[:5],
        # A target that compares every layer gates on that; the whole network's figures are then
        # reported only (the runtime's 1-step rounding differences compound through depth).
        not any(check.name == "layers" for check in checks),
    )


_NO_METRICS = {"sqnr_db": None, "cosine": 0.0, "top1_agreement": None}  # the artifact did not run


def _reference_check(expected: np.ndarray, interpreted: np.ndarray, variance: np.ndarray) -> ReferenceCheck:
    """The ONNX Runtime reference against the float64 interpreter, within float32's derived rounding."""
    return ReferenceCheck(
        compare(expected, interpreted), exceedance(expected, interpreted, TOLERANCE_SIGMAS * np.sqrt(variance))
    )


def _quant_metrics(actual: np.ndarray, expected: np.ndarray, classes: bool) -> dict:
    c = compare(actual, expected, classes)
    return {"sqnr_db": round(sqnr(expected, actual), 2), "cosine": c.cosine, "top1_agreement": c.top1_agreement}
