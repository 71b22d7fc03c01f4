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

from mnc import __version__
from mnc.backends import TARGETS, targets_taking
from mnc.backends.target import FLAGS, TargetOptions
from mnc.errors import EXIT_INTERNAL, InputError, MncError
from mnc.frontend.budget import parse_size
from mnc.quant.calibrate import METHODS as CALIBRATION_METHODS
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
        help="trained weights: .safetensors, .npz, or .pt/.pth (needs torch; loaded with weights_only=True)",
    )
    p.add_argument(
        "--weights-layout",
        metavar="LAYOUT",
        help="how tensor names map to layers: " + ", ".join(LAYOUTS) + " (default: detected)",
    )
    p.add_argument("--seed", type=_natural, help="seed of the initial weights when no --weights (default: 0)")


def _add_target_flags(group) -> None:
    for flag in FLAGS.values():
        takers = []
        for name in targets_taking(flag.name):
            choice = TARGETS[name].choices[flag.name]
            values = ", ".join(v + (" (default)" if v == choice.default else "") for v in choice.values)
            takers.append(f"{name}: {values}" if values else name)
        text = f"{flag.help} [{'; '.join(takers)}]"
        if flag.boolean:
            group.add_argument(flag.option, action="store_true", help=text)
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
    quant = p.add_argument_group("int8 quantisation")
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
        default="minmax",
        help="activation ranges: " + "; ".join(f"{k}: {v}" for k, v in CALIBRATION_METHODS.items()),
    )
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
        print("mnc: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("mnc: terminated; nothing was written", file=sys.stderr)
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
    from mnc.pipeline import Quantization, compile_spec

    options = TargetOptions(**{name: getattr(args, name) for name in FLAGS})
    if args.calib is not None and args.quantize is None:
        raise InputError("--calib is for --quantize int8")
    quantization = (
        Quantization(args.calib, args.calib_samples, args.calib_method, _progress if sys.stderr.isatty() else None)
        if args.quantize
        else None
    )
    result = compile_spec(
        args.spec,
        target=args.target,
        seed=args.seed or 0,
        save_weights=args.save_weights,
        out_dir=args.output_dir,
        passes=args.passes,
        options=options,
        quantization=quantization,
        **_network(args),
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
    return f"tolerance {verification['tolerance']['max_rel_err']:g}"


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
    from mnc.frontend import build_graph, load_spec
    from mnc.summary import format_table, summary_dict

    spec = load_spec(args.spec)
    config = spec.config(args.alpha, args.rho, args.resolution, args.classes)
    summary = summary_dict(spec, config, build_graph(spec, config, args.max_memory))
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


def _verify(args) -> int:
    from mnc.pipeline import verify_file

    result = verify_file(
        args.artifact,
        spec_path=args.spec,
        seed=args.seed,
        **_network(args),
    )
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


_COMMANDS = {"compile": _compile, "ir": _ir, "summary": _summary, "verify": _verify}


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())
