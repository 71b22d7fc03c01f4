"""The command line's grammar: `make_parser` and the argument types it uses. It names no target:
target choices and target flags come from the registry in mnc/backends."""

from __future__ import annotations

import argparse
import math
import sys

from mnc.backends import TARGETS, targets_taking
from mnc.backends.target import FLAGS
from mnc.errors import Wording
from mnc.frontend.budget import parse_size
from mnc.parallel import default_jobs
from mnc.quant.calibrate import DEFAULT_METHOD as CALIBRATION_DEFAULT
from mnc.quant.calibrate import METHODS as CALIBRATION_METHODS
from mnc.version import __version__
from mnc.weights.layouts import LAYOUTS

# How the library's messages name a parameter given here: as the flag that gave it. A flag is its
# parameter's name with dashes (calib_method: --calib-method), but for these.
WORDING = Wording({"out_dir": "--output-dir"})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: usage, then `mnc: error:`, exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"mnc: error: {message}\n")

    def format_help(self) -> str:
        for action in self._actions:
            if isinstance(action.help, _TargetFlagHelp):
                action.help = action.help.text()
        return super().format_help()


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
    quant.add_argument(
        "--no-bias-correction",
        dest="bias_correction",
        action="store_false",
        help="keep each int32 bias as rounded, without taking off the mean shift its layer's int8 weights "
        "cause on the calibration data",
    )
    quant.add_argument(
        "--no-equalization",
        dest="equalization",
        action="store_false",
        help="quantise each activation as the network has it, without first scaling the channels before a "
        "depthwise convolution by powers of two to even out their ranges",
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


class _TargetFlagHelp(str):
    """A target flag's help, which names each target that takes the flag and its values. Reading a
    target's choices imports its module (and its format library): done only when help is shown, so
    that a build imports only its own target's."""

    def __new__(cls, flag):
        self = super().__new__(cls, flag.help)
        self.flag = flag
        return self

    def text(self) -> str:
        takers = []
        for name in targets_taking(self.flag.name):
            choice = TARGETS[name].choices[self.flag.name]
            values = ", ".join(v + (" (default)" if v == choice.default else "") for v in choice.values)
            if not values and isinstance(choice.default, str):  # any value, and a default when not given
                values = f"default {choice.default}"
            takers.append(f"{name}: {values}" if values else name)
        return f"{self.flag.help} [{'; '.join(takers)}]"


def _add_target_flags(group, lists: set[str] = frozenset()) -> None:
    for flag in FLAGS.values():
        text = _TargetFlagHelp(flag)
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
    layers = p.add_argument_group("int8 layer by layer (where int8 loses accuracy)")
    layers.add_argument(
        "--layers",
        action="store_true",
        help="after verifying an int8 artifact, print each quantised layer's SQNR against fp32 on --calib data: "
        "alone (fed fp32 inputs on their grids) and in the int8 network, its range and what it clips",
    )
    layers.add_argument("--calib", metavar="DATA", help="for --layers: a folder of images or a .npy/.npz array")
    layers.add_argument(
        "--calib-samples", type=_whole_number, default=16, metavar="N", help="for --layers: samples used (default: 16)"
    )
    layers.add_argument("--plot", metavar="FILE.png", help="for --layers: also plot both SQNRs per layer (mnc[plot])")

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
        help="latency of an artifact in its runtime (ONNX Runtime for .onnx/.ort, LiteRT for .tflite, ncnn for .ncnn)",
        description="Median, p10, p90 and minimum latency of one inference (batch 1, or the batch a model fixes) "
        "after warm-up runs, in the runtime an app would use: ONNX Runtime (.onnx, .ort), LiteRT with XNNPACK "
        "(.tflite), ncnn with its defaults (.ncnn), Core ML (.mlpackage, macOS only). Idle runtime threads do not "
        "spin.",
    )
    p.add_argument("artifact", help="model file (.onnx, .ort, .tflite, .mlpackage, .ncnn)")
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
