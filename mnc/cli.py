"""The `mnc` command: parses arguments, calls the library, formats results and exit codes.
It names no target: target choices and target flags come from the registry in mnc/backends.

Exit codes: 0 success; 2 bad input (spec, arguments, weights, data, an unwritable destination);
3 verification failed; 70 an internal error (a bug: one line naming a crash file with the
traceback; --debug prints it); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM); 141 when the
reader of the output goes away. Nothing is half-written in any of these cases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
import traceback

from mnc.backends import TARGETS, targets_taking
from mnc.backends.target import FLAGS
from mnc.errors import EXIT_INTERNAL, InputError, MncError
from mnc.frontend.budget import parse_size
from mnc.parallel import default_jobs
from mnc.quant.calibrate import DEFAULT_METHOD as CALIBRATION_DEFAULT
from mnc.quant.calibrate import METHODS as CALIBRATION_METHODS
from mnc.version import __version__
from mnc.weights.layouts import LAYOUTS

EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_BROKEN_PIPE = 130, 143, 141


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: usage, then `mnc: error:`, exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"mnc: error: {message}\n")


def _whole_number(text: str) -> int:
    """Any integer: the library checks the range and says why a value does not work."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _natural(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got '{text}'")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def _list_of(kind):
    """A comma-separated list of values of one kind (a sweep's axis)."""

    def parse(text: str) -> list:
        values = [kind(item.strip()) for item in text.split(",") if item.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got '{text}'")
        return values

    return parse


def _positive(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got '{text}'")
    return value


def _add_timing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive, default=1, help="intra-op threads of the runtime (default: 1)")
    p.add_argument("--warmup", type=_natural, default=10, metavar="N", help="untimed runs first (default: 10)")
    p.add_argument("--runs", type=_positive, default=100, metavar="N", help="timed runs (default: 100)")


def _add_calibration_options(quant, multiple: bool = False) -> None:
    if multiple:
        quant.add_argument(
            "--quantize",
            type=_list_of(_quantize_choice),
            metavar="int8[,none]",
            help="post-training int8 quantisation; 'none,int8' builds both",
        )
    else:
        quant.add_argument("--quantize", choices=["int8"], help="post-training int8 quantisation")
    quant.add_argument(
        "--calib",
        metavar="DATA",
        help="calibration data: a folder of images, a .npy/.npz array of preprocessed inputs, "
        "or 'synthetic' (no real data)",
    )
    quant.add_argument(
        "--calib-samples",
        type=_whole_number,
        default=100,
        metavar="N",
        help="how many calibration samples to use, chosen with --seed (default: 100)",
    )
    quant.add_argument(
        "--calib-method",
        choices=list(CALIBRATION_METHODS),
        default=CALIBRATION_DEFAULT,
        help="activation ranges: " + "; ".join(f"{k}: {v}" for k, v in CALIBRATION_METHODS.items()),
    )


def _quantize_choice(text: str) -> str | None:
    if text not in ("int8", "none"):
        raise argparse.ArgumentTypeError(f"invalid choice: '{text}' (choose from 'int8', 'none')")
    return None if text == "none" else text


def _add_shape_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=_number, help="width multiplier α (default: the spec's)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--rho", type=_number, help="resolution multiplier ρ: resolution = round(base·ρ)")
    group.add_argument("--resolution", type=_whole_number, help="input resolution in pixels")
    p.add_argument(
        "--classes", type=_whole_number, help="number of classes (default: the weights' classifier, else the spec's)"
    )
    p.add_argument(
        "--max-memory",
        type=_size,
        metavar="SIZE",
        help="refuse networks whose compile would need more (8G, 512M; default: the available memory)",
    )


def _add_weights_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        metavar="FILE",
        help="trained weights: .safetensors, .npz, .pt/.pth (read without torch; no code runs) or .keras/.h5",
    )
    p.add_argument(
        "--weights-layout",
        metavar="LAYOUT",
        help="how tensor names map to layers: " + ", ".join(LAYOUTS) + " (default: detected)",
    )
    p.add_argument("--seed", type=_natural, help="seed of the initial weights when no --weights (default: 0)")


def _add_target_flags(group, lists: set[str] = frozenset()) -> None:
    for flag in FLAGS.values():
        takers = []
        for name in targets_taking(flag.name):
            choice = TARGETS[name].choices[flag.name]
            values = ", ".join(v + (" (default)" if v == choice.default else "") for v in choice.values)
            takers.append(f"{name}: {values}" if values else name)
        text = f"{flag.help} [{'; '.join(takers)}]"
        if flag.boolean:
            group.add_argument(flag.option, action="store_true", help=text)
        elif flag.name in lists:
            group.add_argument(flag.option, type=_list_of(str), metavar=f"{flag.metavar}[,…]", help=text)
        else:
            group.add_argument(flag.option, metavar=flag.metavar, help=text)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mnc",
        description="Compile MobileNet-style network specs into verified mobile models.",
        epilog="exit codes: 0 success, 2 bad input, 3 verification failed, 70 internal error (a crash file names "
        "the traceback; --debug prints it), 130 interrupted, 143 terminated, 141 output closed by its reader",
    )
    parser.add_argument("--version", action="version", version=f"mnc {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="print the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("compile", parents=[common], help="build, verify and write a model")
    p.add_argument("spec", help="network spec (.mnet)")
    _add_shape_options(p)
    p.add_argument("--target", required=True, choices=sorted(TARGETS), help="artifact format")
    p.add_argument("-o", "--output-dir", default="build", help="where to write (default: build)")
    _add_weights_options(p)
    p.add_argument("--save-weights", metavar="FILE", help="also write the network's weights (mnc layout, .safetensors)")
    p.add_argument(
        "--passes",
        default="default",
        metavar="PIPELINE",
        help="optimisation: 'default' (fold_bn, fuse_act, cleanup), 'none', or a comma list of passes",
    )
    _add_calibration_options(p.add_argument_group("int8 quantisation"))
    _add_target_flags(p.add_argument_group("target options (each taken by the targets named)"))

    p = sub.add_parser("ir", parents=[common], help="print the IR, before or after optimisation passes")
    p.add_argument("spec", help="network spec (.mnet)")
    _add_shape_options(p)
    p.add_argument("--passes", default="default", metavar="PIPELINE", help="pipeline to run (default: default)")
    p.add_argument(
        "--after",
        metavar="PASS",
        help="stop after this pass ('none': the IR as lowered); default: after the whole pipeline",
    )
    _add_weights_options(p)

    p = sub.add_parser("summary", parents=[common], help="per-layer shapes, parameters and MACs")
    p.add_argument("spec", help="network spec (.mnet)")
    _add_shape_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("verify", parents=[common], help="re-check an existing artifact against its spec")
    p.add_argument("artifact", help="model file written by mnc compile")
    p.add_argument("--spec", help="network spec (default: the spec text recorded in the artifact)")
    _add_shape_options(p)
    _add_weights_options(p)
    p.add_argument("--json", action="store_true", help="print the verification result as JSON")

    p = sub.add_parser(
        "import",
        parents=[common],
        help="write a spec and mnc weights from a trained Keras model (.keras, .h5) or timm state dict",
        description="Reads a Keras model built on Keras's MobileNet or MobileNetV2 application (with its top, "
        "or GlobalAveragePooling2D + Dropout + Dense of your own) without TensorFlow, or a timm MobileNetV1/V2/V3 "
        "state dict (.safetensors, .npz, .pth), and writes DIR/NAME.mnet, "
        "a spec with one row per stage and the model's settings (α, resolution, classes, Keras's padding, "
        "batch-norm ε, activation and input normalisation), and DIR/NAME.safetensors, its weights.",
    )
    p.add_argument("checkpoint", help="the trained model (.keras, .h5; a timm .safetensors/.npz/.pth)")
    p.add_argument("-o", "--output-dir", default=".", help="where to write (default: the current folder)")
    p.add_argument("--name", help="the spec's name and file name (default: the checkpoint's)")

    p = sub.add_parser(
        "bench",
        parents=[common],
        help="latency of an artifact in its runtime (ONNX Runtime for .onnx/.ort, LiteRT for .tflite)",
        description="Median, p10, p90 and minimum latency of one inference (batch 1) after warm-up runs, in the "
        "runtime an app would use: ONNX Runtime (.onnx, .ort), LiteRT with XNNPACK (.tflite), Core ML "
        "(.mlpackage, macOS only). Idle runtime threads do not spin.",
    )
    p.add_argument("artifact", help="model file (.onnx, .ort, .tflite, .mlpackage)")
    _add_timing_options(p)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

    p = sub.add_parser(
        "sweep",
        parents=[common],
        help="compile, verify, time and plot a grid of α × resolution × target",
        description="Every combination of the lists given, each compiled and verified exactly as mnc compile "
        "does it, written with its report under -o DIR, with DIR/sweep.csv, DIR/sweep.json and (with the "
        "plot extra) DIR/sweep.png and .svg. Variants that differ only in precision or quantisation go in "
        "sub-folders named after them. Exit code: 0 if every variant passed, else the worst of theirs.",
    )
    p.add_argument("spec", help="network spec (.mnet)")
    p.add_argument("--alpha", type=_list_of(_number), help="width multipliers, comma-separated (default: the spec's)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--rho", type=_list_of(_number), help="resolution multipliers, comma-separated")
    group.add_argument("--resolution", type=_list_of(_whole_number), help="input resolutions, comma-separated")
    p.add_argument(
        "--target", required=True, type=_list_of(str), help="targets, comma-separated: " + ", ".join(TARGETS)
    )
    p.add_argument("--classes", type=_whole_number, help="number of classes (default: the weights', else the spec's)")
    p.add_argument("--max-memory", type=_size, metavar="SIZE", help="refuse variants whose compile would need more")
    p.add_argument("-o", "--output-dir", default="sweep", help="where to write (default: sweep)")
    _add_weights_options(p)
    p.add_argument("--passes", default="default", metavar="PIPELINE", help="as for mnc compile (default: default)")
    _add_calibration_options(p.add_argument_group("int8 quantisation"), multiple=True)
    options = p.add_argument_group("target options (each given to the targets that take it)")
    _add_target_flags(options, lists={"precision"})
    runs = p.add_argument_group("where the builds run")
    runs.add_argument(
        "--jobs", type=_positive, help=f"builds at once on this machine (default: its cores, {default_jobs()})"
    )
    runs.add_argument(
        "--cluster",
        metavar="tcp://HOST:PORT",
        help="send each build to this running Dask scheduler (pip install 'mnc[cluster]'); "
        "artifacts and reports come back to -o DIR",
    )
    timing = p.add_argument_group("latency (after every build, here, one variant at a time)")
    timing.add_argument("--bench", action="store_true", help="measure the latency of every artifact that passed")
    _add_timing_options(timing)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        with _signals_as_exceptions():
            return _COMMANDS[args.command](args)
    except MncError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mnc: interrupted; nothing half-written is left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("mnc: terminated; nothing half-written is left", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:  # the reader went away (`mnc summary … | head -1`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception:  # a bug: one line on the terminal, the traceback in a crash file
        if getattr(args, "debug", False):
            traceback.print_exc()
        else:
            print(_crash_report(argv), file=sys.stderr)
        return EXIT_INTERNAL


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every `finally` (staging folders) runs."""


@contextlib.contextmanager
def _signals_as_exceptions():
    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    # A file-size limit makes writes fail with EFBIG (a clear message) instead of killing the process.
    previous_xfsz = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGXFSZ, previous_xfsz)


def _crash_report(argv) -> str:
    exc_type, exc, _ = sys.exc_info()
    text = f"mnc {__version__}\nargv: {sys.argv if argv is None else ['mnc', *argv]}\n\n" + traceback.format_exc()
    try:
        fd, path = tempfile.mkstemp(prefix="mnc-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        where = f"the traceback is in {path}"
    except OSError:
        where = "run with --debug to see the traceback"
    return f"mnc: internal error (a bug in mnc): {exc_type.__name__}: {exc}; {where} (--debug prints it)"


def _compile(args) -> int:
    from mnc.api import compile

    result = compile(
        args.spec,
        target=args.target,
        seed=args.seed or 0,
        save_weights=args.save_weights,
        out_dir=args.output_dir,
        passes=args.passes,
        quantize=args.quantize,
        calib=args.calib,
        calib_samples=args.calib_samples,
        calib_method=args.calib_method,
        progress=_progress if sys.stderr.isatty() else None,
        **_network(args),
        **{name: getattr(args, name) for name in FLAGS},
    )
    r = result.report
    v = r["verification"]
    print(
        f"wrote {result.artifact} ({r['artifact']['size_bytes']:,} bytes; "
        f"{r['params']:,} params, {r['macs'] / 1e6:.1f} M MACs)"
    )
    if "quantization" in r:
        q, m, f = r["quantization"], v["metrics"], v["versus_fp32"]
        if q["synthetic"]:
            print(
                "warning: calibrated with synthetic data; the int8 ranges do not represent real inputs", file=sys.stderr
            )
        print(
            f"int8 ({q['calibration']}): against mnc's fake-quant reference SQNR {m['sqnr_db']} dB, cosine "
            f"{m['cosine']:.5f}; against fp32 SQNR {f['sqnr_db']} dB, top-1 agreement {_fraction(f['top1_agreement'])}"
            " (seeded synthetic images)"
        )
        own = f.get("on_calibration_images")
        if own is not None:
            print(
                f"int8 against fp32 on {own['samples']} of the calibration images: SQNR {own['sqnr_db']} dB, "
                f"cosine {own['cosine']:.5f}, top-1 agreement {_fraction(own['top1_agreement'])}"
            )
    for run in v.get("runs", []):
        m = run["metrics"]
        print(
            f"verified with {run['executor']}: max abs error {m['max_abs_err']:.3g}, max rel error "
            f"{m['max_rel_err']:.3g} ({_allowance(v, m)}), cosine {m['cosine']:.7f}"
        )
    _print_check_summaries(v)
    print(f"  reference: {v['reference']}")
    print(f"report: {result.report_path}")
    return 0


def _network(args) -> dict:
    """What every command that builds a network takes from the shape and weights options."""
    return {
        "alpha": args.alpha,
        "rho": args.rho,
        "resolution": args.resolution,
        "classes": args.classes,
        "weights": args.weights,
        "weights_layout": args.weights_layout,
        "max_memory": args.max_memory,
    }


def _fraction(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _allowance(verification: dict, metrics: dict) -> str:
    if "exceedance" in metrics:  # fp32: the per-element bound derived from the computation
        return f"{metrics['exceedance']:.2f} of the rounding error derived for it"
    tolerance = verification["tolerance"]
    if "reported_max_rel_err" in tolerance:  # checked layer by layer; the whole network reported
        return "reported against the fp32 reference"
    return f"tolerance {tolerance['max_rel_err']:g}"


def _print_check_summaries(verification: dict, indent: str = "") -> None:
    for section in verification.values():
        if isinstance(section, dict) and "summary" in section:
            print(indent + section["summary"])
    if "constants" in verification:
        print(
            f"{indent}checked {verification['constants']['checked']} constants of the artifact: each equals the "
            "spec's weights after the declared rounding, bit for bit"
        )


def _ir(args) -> int:
    from mnc.ir.printer import format_graph
    from mnc.passes.manager import resolve_pipeline, run_pipeline
    from mnc.pipeline import build

    pipeline = resolve_pipeline(args.passes)
    if args.after not in (None, "none") and args.after not in pipeline:
        raise InputError(f"--after {args.after}: not a pass of the pipeline ({', '.join(pipeline) or 'empty'})")
    built = build(
        args.spec,
        seed=args.seed or 0,
        **_network(args),
    )
    graph = built.graph
    if args.after != "none":
        graph, _ = run_pipeline(graph, pipeline, stop_after=args.after)
    print(format_graph(graph))
    return 0


def _progress(done: int, total: int) -> None:
    """A one-line progress bar on a terminal."""
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    print(
        f"\rcalibrating [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True
    )


def _summary(args) -> int:
    from mnc.api import summary as summarise
    from mnc.summary_table import format_table

    summary = summarise(
        args.spec,
        alpha=args.alpha,
        rho=args.rho,
        resolution=args.resolution,
        classes=args.classes,
        max_memory=args.max_memory,
    )
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


def _verify(args) -> int:
    from mnc.api import verify

    result = verify(args.artifact, spec=args.spec, seed=args.seed, **_network(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.artifact}: pass (α={result['alpha']:g}, resolution {result['resolution']}, seed {result['seed']})"
        )
        if "versus_fp32" in result:
            m = result["metrics"]
            print(f"  int8 against mnc's fake-quant reference: SQNR {m['sqnr_db']} dB, cosine {m['cosine']:.5f}")
        for run in result.get("runs", []):
            m = run["metrics"]
            print(
                f"  {run['executor']}: max abs error {m['max_abs_err']:.3g}, max rel error {m['max_rel_err']:.3g}, "
                f"cosine {m['cosine']:.7f}"
            )
        _print_check_summaries(result, indent="  ")
        if not result["spec"]["matches_artifact"]:
            print(f"note: {result['spec']['path']} differs from the spec the artifact was built from")
    return 0


def _import(args) -> int:
    from mnc.importer import import_model

    done = import_model(args.checkpoint, args.output_dir, args.name)
    print(
        f"wrote {done.spec_path} ({done.family}, α {done.alpha:g}, {done.resolution}×{done.resolution}, "
        f"{done.classes} classes) and {done.weights_path} ({done.params:,} parameters)"
    )
    print(f"  compile it: mnc compile {done.spec_path} --weights {done.weights_path} --target onnx")
    return 0


def _bench(args) -> int:
    from mnc.api import bench
    from mnc.latency import cpu_line

    latency = bench(args.artifact, threads=args.threads, warmup=args.warmup, runs=args.runs)
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
        threads=args.threads,
        warmup=args.warmup,
        runs=args.runs,
        progress=_sweep_progress(len(variants)),
    )
    print(format_sweep(result.records))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print("wrote " + ", ".join(str(f) for f in result.files))
    return result.exit_code


def _sweep_progress(total: int):
    """A progress bar on a terminal (tqdm); one plain line per variant otherwise (CI logs)."""
    if sys.stderr.isatty():
        import tqdm

        tqdm.tqdm.monitor_interval = 0  # no monitor thread
        bar = tqdm.tqdm(total=total, unit="variant", file=sys.stderr, dynamic_ncols=True)

        def update(variant, record: dict, done: int, total: int) -> None:
            bar.set_postfix_str(f"{record['artifact'] or variant.label()}: {record['verdict']}")
            bar.update(1)
            if done == total:
                bar.close()

        return update

    def line(variant, record: dict, done: int, total: int) -> None:
        print(
            f"[{done}/{total}] {record['artifact'] or variant.label()}: {record['verdict']} "
            f"({record['compile_s']:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
        if record["error"]:
            print("  " + record["error"].replace("\n", "\n  "), file=sys.stderr, flush=True)

    return line


def format_sweep(records: list[dict]) -> str:
    header = ("target", "precision", "α", "res", "params", "MACs", "bytes", "latency ms", "verdict")
    rows = [
        (
            r["target"] + (f" {r['quantize']}" if r["quantize"] else ""),
            r["precision"] or "",
            f"{r['alpha']:g}" if r["alpha"] is not None else "",
            str(r["resolution"] or ""),
            f"{r['params']:,}" if r["params"] is not None else "",
            f"{r['macs'] / 1e6:.1f} M" if r["macs"] is not None else "",
            f"{r['size_bytes']:,}" if r["size_bytes"] is not None else "",
            f"{r['latency_ms']:.3f}" if r["latency_ms"] is not None else "",
            r["verdict"],
        )
        for r in records
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    return "\n".join(
        "  ".join(c.rjust(w) if 2 <= i <= 7 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        for cells in [header, *rows]
    )


_COMMANDS = {
    "compile": _compile,
    "ir": _ir,
    "summary": _summary,
    "verify": _verify,
    "import": _import,
    "bench": _bench,
    "sweep": _sweep,
}


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())
