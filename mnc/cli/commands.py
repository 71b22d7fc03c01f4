"""One function per subcommand: the library call its arguments make, then what it prints. `COMMANDS` maps
each subcommand's name to its function. The library is imported inside each, so that a command loads only
what it uses."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mnc.backends.target import FLAGS, TargetOptions
from mnc.cli.render import (
    fastest,
    format_sweep,
    print_compiled,
    print_layer_errors,
    print_verified,
    progress,
    sweep_progress,
    write_layer_plot,
)
from mnc.errors import InputError

if TYPE_CHECKING:
    from mnc.pipeline.request import BuildRequest


def _compile(args) -> int:
    from mnc.pipeline import compile_spec, quantization

    request = _request(
        args,
        args.spec,
        target=args.target,
        passes=args.passes,
        options=TargetOptions(**{name: getattr(args, name) for name in FLAGS}),
        quantization=quantization(
            args.quantize,
            args.calib,
            args.calib_samples,
            args.calib_method,
            progress=progress if sys.stderr.isatty() else None,
            bias_correction=args.bias_correction,
            equalization=args.equalization,
        ),
    )
    print_compiled(compile_spec(request, args.output_dir, save_weights=args.save_weights))
    return 0


def _request(args, spec, **compile_fields) -> BuildRequest:
    """What every command that builds a network takes from the shape and weights options."""
    from mnc.pipeline.request import BuildRequest

    weights = {"weights": args.weights, "weights_layout": args.weights_layout, "seed": args.seed}
    return BuildRequest(spec, **_shape(args), **weights, **compile_fields)


def _shape(args) -> dict:
    """The network's shape options, as every command that builds one takes them."""
    names = ("alpha", "rho", "resolution", "classes", "max_memory")
    return {name: getattr(args, name) for name in names}


def _timing(args) -> dict:
    """The timing options, as bench and sweep take them."""
    return {name: getattr(args, name) for name in ("threads", "warmup", "runs")}


def _ir(args) -> int:
    from mnc.ir.printer import format_graph
    from mnc.passes.manager import resolve_pipeline, run_pipeline
    from mnc.pipeline import build

    pipeline = resolve_pipeline(args.passes)
    if args.after not in (None, "none") and args.after not in pipeline:
        raise InputError(f"--after {args.after}: not a pass of the pipeline ({', '.join(pipeline) or 'empty'})")
    graph = build(_request(args, args.spec)).graph
    if args.after != "none":
        graph, _ = run_pipeline(graph, pipeline, stop_after=args.after)
    print(format_graph(graph))
    return 0


def _summary(args) -> int:
    from mnc.api import summary as summarise
    from mnc.summary_table import format_table

    summary = summarise(args.spec, **_shape(args))
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


def _verify(args) -> int:
    from mnc.pipeline import int8_layer_errors, verify_file

    if args.layers and args.calib is None:
        raise InputError("--layers needs calibration data: --calib FOLDER|FILE.npy|FILE.npz")
    if not args.layers and (args.calib is not None or args.plot is not None):
        raise InputError(f"{'--calib' if args.calib is not None else '--plot'} is for --layers")
    request = _request(args, args.spec)
    print_verified(args.artifact, verify_file(args.artifact, request), args.json)
    if args.layers:
        errors = int8_layer_errors(args.artifact, args.calib, args.calib_samples, request)
        print_layer_errors(errors, args.calib, args.json)
        if args.plot is not None:
            print(f"plot: {write_layer_plot(errors, args.plot, Path(args.artifact).name)}")
    return 0


def _import(args) -> int:
    from mnc.importer import import_model

    done = import_model(args.checkpoint, args.output_dir, args.name)
    print(
        f"wrote {done.spec_path} ({done.family}, α {done.alpha:g}, {done.resolution}×{done.resolution}, "
        f"{done.classes} classes) and {done.weights_path} ({done.params:,} parameters)"
    )
    spec, weights = shlex.quote(str(done.spec_path)), shlex.quote(str(done.weights_path))
    print(f"  compile it: mnc compile {spec} --weights {weights} --target onnx")
    return 0


def _bench(args) -> int:
    from mnc.api import bench
    from mnc.latency import cpu_line

    latency = bench(args.artifact, **_timing(args))
    print(json.dumps(latency.as_dict(), indent=2) if args.json else latency.line())
    if not args.json:
        print(f"  cpu: {cpu_line()}")
    return 0


def _sweep(args) -> int:
    from mnc.variants import Shared, grid, sweep

    shared = Shared(
        spec=args.spec,
        classes=args.classes,
        weights=args.weights,
        weights_layout=args.weights_layout,
        seed=args.seed or 0,
        passes=args.passes,
        calib=args.calib,
        calib_samples=args.calib_samples,
        calib_method=args.calib_method,
        bias_correction=args.bias_correction,
        equalization=args.equalization,
        max_memory=args.max_memory,
        target_options={name: getattr(args, name) for name in FLAGS if name != "precision" and getattr(args, name)},
    )
    quantize = args.quantize or [None]
    if args.calib is not None and quantize == [None]:
        raise InputError("--calib is for --quantize int8")
    variants = grid(
        args.target,
        args.alpha or [None],
        args.resolution or [None],
        args.rho or [None],
        args.precision or [None],
        quantize,
    )
    result = sweep(
        shared,
        variants,
        args.output_dir,
        jobs=args.jobs,
        cluster=args.cluster,
        measure=args.bench,
        progress=sweep_progress(len(variants)),
        **_timing(args),
    )
    print(format_sweep(result.records))
    for line in fastest(result.records):
        print(line)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print("wrote " + ", ".join(str(f) for f in result.files))
    return result.exit_code


COMMANDS = {
    "compile": _compile,
    "ir": _ir,
    "summary": _summary,
    "verify": _verify,
    "import": _import,
    "bench": _bench,
    "sweep": _sweep,
}
