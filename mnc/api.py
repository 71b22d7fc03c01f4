"""mnc's Python API: what the command line does, as functions. The command line, `mnc sweep` and
its Dask tasks call these, so a script gets exactly the artifacts and errors `mnc compile` gives.

    import mnc
    result = mnc.compile("specs/v2.mnet", alpha=0.5, resolution=160, target="tflite", out_dir="build")
    result.artifact, result.report["macs"], result.report["verification"]["verdict"]
    result.typed.macs, result.typed.verification.passed   # the same report, typed (docs/report.md)
    mnc.verify(result.artifact)                 # raises VerificationError (exit_code 3) if it fails
    mnc.bench(result.artifact, threads=1).median_ms
    mnc.summary("specs/v1.mnet", alpha=0.25)["params"]

Errors are MncError subclasses (mnc.errors) carrying the CLI's exit code: InputError (2) for bad
input, VerificationError (3) when an artifact does not compute what the spec says. Their messages
name the keyword arguments (`calib=`, `quantize='int8'`), where the command line names its flags.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mnc.backends.target import TargetOptions
from mnc.frontend import build_graph, load_spec
from mnc.latency import Latency
from mnc.latency import bench as _bench
from mnc.pipeline import BuildRequest, CompileResult, compile_spec, quantization, verify_file
from mnc.quant.calibrate import DEFAULT_METHOD
from mnc.summary_table import summary_dict


def compile(
    spec: str | Path,
    *,
    target: str = "onnx",
    alpha: float | None = None,
    rho: float | None = None,
    resolution: int | None = None,
    classes: int | None = None,
    out_dir: str | Path = "build",
    weights: str | Path | None = None,
    weights_layout: str | None = None,
    seed: int = 0,
    passes: str = "default",
    quantize: str | None = None,
    calib: str | None = None,
    calib_samples: int = 100,
    calib_method: str = DEFAULT_METHOD,
    calib_name: str | None = None,
    bias_correction: bool = True,
    equalization: bool = True,
    save_weights: str | Path | None = None,
    max_memory: int | None = None,
    progress=None,
    **target_options,
) -> CompileResult:
    """Build, verify and write one artifact (and its report) under out_dir, as `mnc compile` does.
    Target options are the target flags as keywords: precision="fp16", image_input=True,
    labels="labels.txt", deployment_target="iOS17"."""
    quantized = quantization(
        quantize, calib, calib_samples, calib_method, calib_name, progress, bias_correction, equalization
    )
    network = _network(spec, alpha, rho, resolution, classes, weights, weights_layout, seed, max_memory)
    request = dataclasses.replace(
        network, target=target, passes=passes, options=TargetOptions(**target_options), quantization=quantized
    )
    return compile_spec(request, out_dir, save_weights=save_weights)


def verify(
    artifact: str | Path,
    *,
    spec: str | Path | None = None,
    alpha: float | None = None,
    rho: float | None = None,
    resolution: int | None = None,
    classes: int | None = None,
    seed: int | None = None,
    weights: str | Path | None = None,
    weights_layout: str | None = None,
    max_memory: int | None = None,
) -> dict:
    """Re-check a saved artifact against the reference rebuilt from its spec (by default the spec
    recorded in it); returns the verification section, raises VerificationError if it fails."""
    request = _network(spec, alpha, rho, resolution, classes, weights, weights_layout, seed, max_memory)
    return verify_file(artifact, request).as_dict()


def _network(spec, alpha, rho, resolution, classes, weights, weights_layout, seed, max_memory) -> BuildRequest:
    """The request's network part, which compile and verify take alike."""
    return BuildRequest(
        spec,
        alpha=alpha,
        rho=rho,
        resolution=resolution,
        classes=classes,
        weights=weights,
        weights_layout=weights_layout,
        seed=seed,
        max_memory=max_memory,
    )


def summary(
    spec: str | Path,
    *,
    alpha: float | None = None,
    rho: float | None = None,
    resolution: int | None = None,
    classes: int | None = None,
    max_memory: int | None = None,
) -> dict:
    """Per-layer shapes, parameters and MACs, and their totals, as `mnc summary --json` prints them."""
    checked = load_spec(spec)
    config = checked.config(alpha, rho, resolution, classes)
    return summary_dict(checked, config, build_graph(checked, config, max_memory))


def bench(artifact: str | Path, *, threads: int = 1, warmup: int = 10, runs: int = 100) -> Latency:
    """Latency of a saved artifact in its runtime (ONNX Runtime for .onnx/.ort, LiteRT for .tflite,
    Core ML on macOS for .mlpackage): median, p10, p90 and minimum over `runs` after `warmup`."""
    return _bench(artifact, threads=threads, warmup=warmup, runs=runs)
