"""The Target interface: everything the compiler and the command line know about an output format.

A target is one module that defines a Target and is registered in mnc/backends/__init__.py. It
says which target flags it takes (and turns them into its own typed options), how it quantises
(its Int8Plan), how it writes an artifact from the IR and reads mnc's record back, which executors
run a saved artifact for verification, and which extra int8 checks its runtime needs. Its Lowering
(mnc/backends/lowering.py: IR op → lowering, activation → lowering) lowers every op and activation
of the registries or refuses it with a located error (tests/test_targets.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from mnc.artifact import ArtifactRecord
from mnc.backends.lowering import Lowering
from mnc.errors import InputError, Loc, param
from mnc.ir.activations import FUSABLE
from mnc.ir.graph import Graph


@dataclass(frozen=True)
class Flag:
    """A command-line option that configures the artifact of some targets (`--precision` …)."""

    name: str  # the keyword: precision → --precision
    help: str
    metavar: str | None = None
    boolean: bool = False

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


FLAGS: dict[str, Flag] = {
    f.name: f
    for f in [
        Flag("precision", "compute precision of the model", "P"),
        Flag("deployment_target", "minimum OS the model runs on", "OS"),
        Flag(
            "image_input",
            "take an 8-bit RGB image instead of a float array; the spec's mean/std are applied "
            "exactly inside the model",
            boolean=True,
        ),
        Flag("labels", "one class label per line: makes a classifier with class labels", "FILE"),
        Flag(
            "batch",
            "the batch dimension of the input and outputs: a number fixes it (the mobile execution providers, "
            "NNAPI and Core ML, take only fixed shapes), 'dynamic' leaves it symbolic",
            "N|dynamic",
        ),
        Flag(
            "mobile_ops",
            "lower to the operators ONNX Runtime Mobile's NNAPI and Core ML providers take (a hard sigmoid as "
            "Add, Clip and Div, Flatten as Reshape, …), which .ort always uses",
            boolean=True,
        ),
    ]
}


DYNAMIC_BATCH = "dynamic"


def fixed_batch(value) -> int | None:
    """The `batch` flag's value: a batch the model's input and outputs are fixed to, or None where it
    stays symbolic ('dynamic')."""
    if value == DYNAMIC_BATCH:
        return None
    if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
        raise InputError(f"{param('batch', value)}: a whole number of samples (1 or more), or {DYNAMIC_BATCH}")
    return int(value)


class TargetOptions:
    """Target flags as given on the command line or by a caller; None or False: not given."""

    def __init__(self, **given):
        unknown = sorted(set(given) - set(FLAGS))
        if unknown:
            raise TypeError(f"unknown target option(s) {', '.join(unknown)}; options are {', '.join(FLAGS)}")
        self.given = {k: v for k, v in given.items() if v is not None and v is not False}


@dataclass(frozen=True)
class Choice:
    """The values a target accepts for one flag, and the one it takes when the flag is absent."""

    values: tuple[str, ...] = ()  # empty: any value (a file) or a boolean flag
    default: object = None


@dataclass(frozen=True)
class NetworkFacts:
    """What target options are checked against and built from (the spec's settings, decided)."""

    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: dict[str, str] = field(default_factory=dict)  # short_description, author, license, version


@dataclass(frozen=True)
class Int8Plan:
    """How a target's artifacts hold int8: the weight range, whether activations are quantised
    (else the artifact computes in float with int8 weights), and the words for reports and metadata."""

    weight_bits: int
    activations: bool
    scheme: str
    # Depthwise convolutions' weights, where the target's kernels accumulate each product in int32
    # and so allow more bits than its other kernels (None: weight_bits).
    depthwise_weight_bits: int | None = None


@dataclass(frozen=True)
class Executor:
    """Runs a saved artifact: (path, {input name: batch}) → [output batch]."""

    label: str
    run: Callable[[Path, dict[str, np.ndarray]], list[np.ndarray]]
    # Runs one sample at a time on one thread: verification may give half the batch to a forked process.
    split_samples: bool = False
    # Runs in a child process of its own (a fresh interpreter, which takes a while to start):
    # verification starts it first, to run beside the others.
    own_process: bool = False


@dataclass(frozen=True)
class Timer:
    """A saved artifact loaded in the runtime an app would use, for `mnc bench`: `run()` is one
    inference on an input set beforehand, and nothing else."""

    runtime: str  # the runtime and how it runs the model ("ONNX Runtime 1.32.0 (CPUExecutionProvider)")
    run: Callable[[], object]


def timing_input(shape, dtype) -> np.ndarray:
    """A seeded input of a model's own shape and type (latency does not depend on the values)."""
    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@dataclass(frozen=True)
class Check:
    """A target-specific check of an artifact (int8, or fp16 layer by layer): its report section and
    whether it passed."""

    name: str
    section: dict
    passed: bool
    failure: str = ""
    summary: str = ""  # one line for the terminal, when the check is worth showing there


def layer_by_layer(
    quantized: Graph,
    real: Callable[[str], np.ndarray],
    executor: str,
    bound: float,
    note: str = "",
    allowance: Callable[[str, list[np.ndarray]], np.ndarray | None] | None = None,
) -> Check:
    """Every quantised layer against mnc's fake-quant reference of that layer, fed the artifact's own
    inputs: `real(node)` is a node's output as the artifact computed it, dequantised, in the IR's
    layout. A wrong weight, scale or layout shows at its layer, and the runtime's rounding, which
    may differ from the reference's by one step wherever a value lies near a rounding boundary,
    cannot compound through the depth of the network (end to end, such 1-step differences grow:
    17 blocks of ImageNet-trained MobileNetV2 turn them into 0.99 cosine).

    `allowance(node, inputs)`: steps per element a target's kernel may differ beyond `bound` by its
    documented arithmetic (derived from the inputs, not measured), or None."""
    from mnc.quant.interpreter import FakeQuantInterpreter

    reference = FakeQuantInterpreter(quantized)
    layers, worst, allowed = {}, ("", 0.0, 0.0), []
    for name in quantized.topo():
        node = quantized.node(name)
        # The input, and what reads it unquantised (an image's pixels, normalised in float): the
        # artifact's own value of such a node is what the layers after it are fed and checked on.
        if node.op == "input" or any(quantized.node(p).qparams is None for p in quantized.inputs_of(name)):
            continue
        inputs = [real(p) for p in quantized.inputs_of(name)]
        expected = reference.run_node(name, node, inputs)
        # Both sides lie on the layer's grid: count whole steps.
        steps = np.rint(np.abs(real(name) - expected) / node.qparams.output.scale)
        extra = allowance(name, inputs) if allowance is not None else None
        excess = float((steps - (extra if extra is not None else 0.0)).max())
        if extra is not None:
            allowed.append(name)
        layers[name] = float(steps.max())
        worst = max(worst, (name, excess, layers[name]), key=lambda kv: kv[1])
    passed = worst[1] <= bound
    beyond = f", plus the derived allowance of the runtime's arithmetic on {len(allowed)} layer(s)" if allowed else ""
    return Check(
        "layers",
        {
            "executor": executor,
            "layers": len(layers),
            "max_lsb": round(max(layers.values(), default=0.0), 3),
            "worst_layer": worst[0],
            "bound_lsb": bound,
            **({"allowance": {"layers": allowed, "max_lsb_beyond_it": round(worst[1], 3)}} if allowed else {}),
            **({"note": note} if note else {}),
            "verdict": "pass" if passed else "fail",
        },
        passed,
        f"layer '{worst[0]}' is {worst[2]:.1f} LSB from mnc's fake-quant reference of that layer "
        f"(bound {bound:g} LSB{beyond})",
        f"verified layer by layer with {executor}: {len(layers)} layers, at most {max(layers.values(), default=0):g} "
        f"LSB from mnc's fake-quant reference of each (bound {bound:g}{beyond})",
    )


def dequantized(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (np.asarray(values, dtype=np.float64) - zero_point) * scale


class Target:
    name: ClassVar[str]
    suffix: ClassVar[str]
    choices: ClassVar[dict[str, Choice]] = {}  # the flags this target takes
    # The activations fuse_act may fold into a conv/fc for this target (default: every fusable one).
    fused_activations: ClassVar[tuple[str, ...]] = FUSABLE

    # How the image input's rewrite suits this target's runtime (mnc/passes/image_input.py options:
    # `pixel_max`, what the pixels reach as the graph first sees them; `arithmetic` of the constants).
    image_input_rewrite: ClassVar[dict] = {}

    def lowering(self) -> Lowering:
        """How the target lowers each IR op and activation."""
        raise NotImplementedError

    def rewrites(self, record: ArtifactRecord, network: NetworkFacts) -> list[tuple[str, dict]]:
        """The rewrites its runtime needs before lowering ((name, options) in mnc/passes/rewrites.py
        REWRITES, in order): the image input's normalisation where the artifact takes an image. A
        target extends the list with what its runtime lacks."""
        if not record.image_input:
            return []
        return [("image_input", {"mean": network.mean, "std": network.std, **self.image_input_rewrite})]

    # ---- options ----------------------------------------------------------------------

    def options(self, given: TargetOptions, network: NetworkFacts):
        """The target's typed options from the flags given; InputError for a flag it does not take
        or a value it does not accept."""
        values = {}
        for name, value in given.given.items():
            choice = self.choices.get(name)
            if choice is not None and choice.values and value not in choice.values:
                raise InputError(f"{param(name, value)}: choose one of {', '.join(choice.values)}")
            values[name] = value
        for name, choice in self.choices.items():
            values.setdefault(name, choice.default)
        return self.make_options(values, network)

    def make_options(self, values: dict, network: NetworkFacts):
        return values

    def record_fields(self, options) -> dict:
        """What of the options the artifact's record keeps (verification needs them back)."""
        return {}

    def report_fields(self, options) -> dict | None:
        """The target's own section of the report, if it has one."""
        return None

    # ---- int8 ---------------------------------------------------------------------------

    def int8_plan(self, options) -> Int8Plan:
        raise InputError(f"{param('quantize', 'int8')} is not available for {param('target', self.name)}")

    def int8_checks(self, artifact: Path, quantized: Graph, feed: np.ndarray, output: np.ndarray) -> list[Check]:
        """Checks of an int8 artifact beyond its agreement with the fake-quant reference."""
        return []

    # ---- fp16 ----------------------------------------------------------------------------

    def fp16_weights_graph(self, emitted: Graph) -> Graph | None:
        """For an fp16 artifact that stores weights in float16 but computes in float32: the graph it
        evaluates (the emitted IR with those weights rounded), whose float32 rounding error the
        derived bound covers. None where the artifact computes in float16 throughout."""
        return None

    def fp16_layers(self, artifact: Path, emitted: Graph, feed: np.ndarray) -> tuple[Graph, dict] | None:
        """For an fp16 artifact that computes in float16 throughout: (the emitted IR with its constants
        as the artifact holds them, every node's output as the artifact computed it on each sample of
        the feed), for a check layer by layer; its outputs are the executor's run on the feed. None
        where that does not apply."""
        return None

    # ---- artifacts ------------------------------------------------------------------------

    def layout(self, shape: tuple[int, ...]) -> list[int]:
        """A per-sample IR shape (C, H, W) as the artifact's tensors hold it (NCHW unless overridden)."""
        return list(shape)

    def write(self, graph: Graph, path: Path, record: ArtifactRecord, options) -> dict | None:
        """Write the artifact at `path` (and its companions beside it); may return facts of the
        build for the target's section of the report."""
        raise NotImplementedError

    def companions(self, artifact: Path) -> list[Path]:
        """Files written beside the artifact that belong with it (installed with it)."""
        return []

    def read_metadata(self, path: Path) -> dict[str, str]:
        """mnc's metadata of a saved artifact; InputError if the file is not a readable artifact."""
        raise NotImplementedError

    def executors(self) -> list[Executor]:
        """What runs a saved artifact, the main one first."""
        raise NotImplementedError

    def timer(self, path: Path, threads: int) -> Timer:
        """The artifact loaded for timing with `threads` intra-op threads; InputError where its
        runtime does not exist on this host."""
        raise InputError(f"'{path}': {self.name} artifacts cannot be timed")

    # Constants (by name suffix) an artifact may lack because its runtime's optimiser folded them
    # into a kernel or shared one copy between layers; the others must all be there.
    foldable_constants: ClassVar[tuple[str, ...]] = ()

    def constants(self, path: Path) -> dict[str, np.ndarray]:
        """The constants (weights, biases, quantisation parameters) the saved artifact holds, by name."""
        return {}

    def expected_constants(self, graph: Graph, record: ArtifactRecord) -> dict[str, np.ndarray]:
        """What those constants must be, exactly, computed from the emitted IR by the declared rounding
        or quantisation. Empty: the target's constants are not checked (outputs still are)."""
        return {}


INPUT_NAME = "input"  # every artifact's input, whatever the target


def output_name(graph: Graph) -> str:
    """What every target calls a classifier's one output."""
    return "probabilities" if graph.node(graph.outputs[0]).op == "softmax" else "logits"


def output_names(graph: Graph) -> list[str]:
    """What every target calls the network's outputs: the spec's names for them, else a classifier's."""
    if graph.output_labels:
        return [graph.output_labels[o] for o in graph.outputs]
    return [output_name(graph)]


def joined(outputs) -> np.ndarray:
    """A network's outputs as one array: each output flattened per sample, in order, side by side.
    Verification compares that array element by element, so every output is checked; a network with
    one output keeps its own shape."""
    outputs = list(outputs)
    if len(outputs) == 1:
        return outputs[0]
    return np.concatenate([np.reshape(o, (len(o), -1)) for o in outputs], axis=1)


def is_classifier(graph: Graph) -> bool:
    """The network ends in one vector of class scores."""
    return len(graph.outputs) == 1 and len(graph.node(graph.outputs[0]).shape) == 1


def check_classifier(graph: Graph) -> None:
    """--labels makes a classifier: the network must end in one vector of class scores."""
    shapes = [graph.node(o).shape for o in graph.outputs]
    if not is_classifier(graph):
        described = ", ".join(f"{n} {'×'.join(map(str, s))}" for n, s in zip(output_names(graph), shapes))
        raise InputError(
            f"{param('labels')} makes a classifier, whose output is one vector of class scores; this network's "
            f"output{'s are' if len(shapes) > 1 else ' is'} {described}",
            graph.node(graph.outputs[-1]).src,
        )


def read_labels(path: str, classes: int) -> tuple[str, ...]:
    """One label per line, as many as the network has classes, none empty or repeated."""
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
