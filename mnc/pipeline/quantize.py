"""int8 post-training quantisation of an optimised graph: calibrate activation ranges on the data
the user gives, then run the quantize_int8 pass with them and the target's weight bits."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mnc.backends.target import Int8Plan
from mnc.errors import InputError, param
from mnc.ir.graph import Graph
from mnc.passes.manager import run_pipeline
from mnc.pipeline.build import Built
from mnc.pipeline.report import QuantizationInfo
from mnc.pipeline.request import Quantization
from mnc.quant import bias_correction, equalization
from mnc.quant.calibrate import METHODS, activation_ranges
from mnc.quant.data import load_calibration
from mnc.quant.debug import layer_errors

PASS = "quantize_int8"
REPORTED_SAMPLES = 16
LAYER_SAMPLES = 4  # of those: each layer's int8 error against fp32 (three runs of the network each)


@dataclass(frozen=True)
class Quantized:
    graph: Graph
    records: list[dict]  # the pass's record
    ranges: dict[str, list[float]]
    equalization: dict[str, list[int]] | None  # doublings per channel; None: not made
    bias_corrections: dict[str, list[int]] | None  # None: not asked for
    calibration: str  # what the data was, in words
    info: QuantizationInfo  # the report's 'quantization' section
    # A few of the user's own calibration inputs (None for synthetic data): what int8 costs against
    # fp32 is reported on these too, since on the verification stream's synthetic images a trained
    # network's answers say little.
    sample: np.ndarray | None = None


def quantize(optimised: Graph, built: Built, q: Quantization, plan: Int8Plan) -> Quantized:
    """Calibrate on the optimised fp32 graph, then quantise it. Bad data fails here, before anything is written."""
    if q.calib is None:
        where = param("calib", metavar="FOLDER|FILE.npy|FILE.npz")
        raise InputError(
            f"{param('quantize', 'int8')} needs calibration data: {where}, "
            f"or {param('calib', 'synthetic')} (no real data: accuracy is then not represented)"
        )
    if q.method not in METHODS:
        raise InputError(f"{param('calib_method', q.method)}: choose one of {', '.join(METHODS)}")
    with built.timings.stage("calibrate"):
        data, described = load_calibration(
            q.calib, built.spec.settings, built.config.resolution, q.samples, built.seed, q.name
        )
        doublings, equalized_on = None, 0
        if q.equalization and plan.activations:  # exact only where the uint8 grid saturates (see its module)
            equalized_on = min(len(data), equalization.SAMPLES)
            doublings = equalization.doublings(optimised, data[:equalized_on])
        source = equalization.equalized(optimised, doublings or {})
        ranges = activation_ranges(source, data, q.method, q.progress)
    bits = (plan.weight_bits, plan.depthwise_weight_bits)
    quantized, records = quantize_with_ranges(optimised, ranges, *bits, None, doublings)
    corrections, corrected_on = None, 0
    if q.bias_correction:
        with built.timings.stage("bias correction"):
            corrected_on = min(len(data), bias_correction.SAMPLES)
            corrections = bias_correction.bias_corrections(quantized, data[:corrected_on])
        quantized, records = quantize_with_ranges(optimised, ranges, *bits, corrections, doublings)
    _check_saturation_before_relu6(quantized, doublings)
    info = QuantizationInfo(
        scheme=plan.scheme,
        weight_bits=plan.weight_bits,
        depthwise_weight_bits=plan.depthwise_weight_bits or plan.weight_bits,
        calibration=described,
        method=q.method,
        samples=len(data),
        synthetic=q.calib == "synthetic",
        bias_overflow_resolved=records[-1]["bias_overflow_resolved"],
        equalization=None if doublings is None else _equalized(doublings, equalized_on),
        bias_correction=_described(quantized, corrections, corrected_on),
        activation_ranges={k: [round(v, 7) for v in r] for k, r in ranges.items()},
    )
    sample = None if q.calib == "synthetic" else data[:REPORTED_SAMPLES]
    if sample is not None and plan.activations:  # weight-only int8 keeps its activations in float
        with built.timings.stage("layer errors"):
            layers = [e.as_dict() for e in layer_errors(quantized, sample[:LAYER_SAMPLES])]
        info = replace(info, layers={"samples": min(len(sample), LAYER_SAMPLES), "of": layers})
    return Quantized(quantized, records, ranges, doublings, corrections, described, info, sample)


def quantize_with_ranges(
    optimised: Graph,
    ranges: dict,
    weight_bits: int,
    depthwise_weight_bits: int | None = None,
    bias_corrections: dict[str, list[int]] | None = None,
    doublings: dict[str, list[int]] | None = None,
) -> tuple[Graph, list[dict]]:
    """The quantize_int8 pass on a copy of the optimised graph, equalised by these doublings, with
    these activation ranges (and bias corrections, in steps of each bias's scale)."""
    if doublings:
        optimised = equalization.equalized(optimised, doublings)
    options = {
        "activation_ranges": ranges,
        "weight_bits": weight_bits,
        "depthwise_weight_bits": depthwise_weight_bits,
        "bias_corrections": bias_corrections,
    }
    return run_pipeline(optimised, [PASS], options={PASS: options})


def quantize_as_recorded(optimised: Graph, record) -> Graph:
    """The quantised IR an int8 artifact was emitted from, rebuilt from its ArtifactRecord."""
    emitted, _ = quantize_with_ranges(
        optimised,
        record.activation_ranges,
        record.weight_bits or 8,
        record.depthwise_weight_bits,
        record.bias_corrections,
        record.equalization,
    )
    return emitted


def _equalized(doublings: dict[str, list[int]], samples: int) -> dict:
    channels = sum(sum(1 for k in d if k) for d in doublings.values())
    return {"samples": samples, "layers": len(doublings), "channels": channels}


def _check_saturation_before_relu6(quantized: Graph, doublings: dict[str, list[int]] | None) -> None:
    """What makes equalising through a ReLU6 exact: the uint8 grid of the equalised tensor ends
    within 6, so it saturates before any channel's scaled clip would (6·2^k ≥ 6)."""
    for name in doublings or {}:
        node = quantized.node(name)
        out = node.qparams.output
        if node.attrs.get("fused_act") == "relu6" and (255 - out.zero_point) * out.scale > 6 * (1 + 1e-9):
            raise AssertionError(f"equalised '{name}' has a uint8 grid beyond ReLU6's 6: the equalisation is not exact")


def _described(quantized: Graph, corrections: dict[str, list[int]] | None, samples: int) -> dict | None:
    """The report's record of bias correction: on how many samples, how many layers, and the largest
    mean shift it took off a layer's output, in steps of that output's int8 grid."""
    if corrections is None:
        return None
    largest = 0.0
    for name, steps in corrections.items():
        q = quantized.node(name).qparams
        largest = max(largest, float(np.max(np.abs(steps) * q.bias.scale, initial=0.0)) / q.output.scale)
    return {"samples": samples, "layers": len(corrections), "largest_shift_output_steps": round(largest, 3)}
