"""Spec → weighted IR: parse, lower with α/ρ, and load or initialise the weights."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from mnc.errors import Collector, InputError, Loc, param
from mnc.frontend import CheckedSpec, Config, build_graph, load_spec
from mnc.ir.graph import Graph
from mnc.pipeline.request import BuildRequest, as_request
from mnc.timing import Timings
from mnc.weights.files import WeightsFile, read_weights
from mnc.weights.init import init_weights
from mnc.weights.layouts import Layout, choose_layout
from mnc.weights.load import WeightsMismatch, expected_shapes, load_weights

# Width multipliers tried when a checkpoint does not fit, to tell the user which one it does fit.
COMMON_ALPHAS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


@dataclass
class Built:
    spec: CheckedSpec
    config: Config
    graph: Graph  # the unoptimised, weighted IR: what the reference runs
    seed: int
    weights: dict  # where the parameters came from, for the report and the artifact's record
    timings: Timings = field(default_factory=Timings)


def build(spec: BuildRequest | CheckedSpec | str | Path, /, *, timings: Timings | None = None, **fields) -> Built:
    """Spec → IR graph with α/ρ applied, shapes inferred, and weights: loaded from a checkpoint (a
    path, or a file already read) whose classifier gives the class count unless `classes` is
    given, or initialised from the seed. Takes a BuildRequest, or a spec and its fields as keywords."""
    request = as_request(spec, fields)
    spec, alpha, rho, resolution = request.spec, request.alpha, request.rho, request.resolution
    classes, weights, seed = request.classes, request.weights, request.seed or 0
    timings = timings or Timings()
    if not isinstance(spec, CheckedSpec):
        with timings.stage("parse"):
            spec = load_spec(spec)
    checkpoint = layout = None
    overridden: dict = {}
    if weights is not None:
        with timings.stage("read_weights"):
            checkpoint = weights if isinstance(weights, WeightsFile) else read_weights(weights)
            layout = choose_layout(set(checkpoint.tensors), request.weights_layout, Loc.file(checkpoint.path))
        spec, overridden = _with_conventions(spec, _conventions(checkpoint, layout))
        if classes is None:
            classes = layout.classes(checkpoint.tensors)
        if classes is None:
            classes = _classes_from_shapes(spec, alpha, rho, resolution, checkpoint, layout)
    config = spec.config(alpha, rho, resolution, classes)
    with timings.stage("lower"):
        graph = build_graph(spec, config, request.max_memory)
        graph.validate()
    with timings.stage("weights"):
        if checkpoint is not None:
            try:
                load_weights(graph, checkpoint, layout)
            except WeightsMismatch as exc:
                _add_fit_hint(exc, spec, config, checkpoint, layout)
                raise
            source = {"file": checkpoint.path, "sha256": checkpoint.sha256, "layout": layout.name}
            if overridden:
                source["conventions"] = overridden
        else:
            init_weights(graph, spec.settings, seed)
            source = {"seed": seed, "init": "He-normal convolutions, batch norm calibrated on seeded images"}
        graph.validate(require_params=True)
    return Built(spec, config, graph, seed, source, timings)


def _conventions(checkpoint: WeightsFile, layout: Layout) -> dict[str, tuple]:
    """setting → (value, where it comes from): what the weights' framework computes with."""
    found = {k: (v, f"the '{layout.name}' layout") for k, v in layout.conventions(set(checkpoint.tensors)).items()}
    found.update({k: (v, f"the model's own layers in {checkpoint.path}") for k, v in checkpoint.conventions.items()})
    return found


def _with_conventions(spec: CheckedSpec, conventions: dict[str, tuple]) -> tuple[CheckedSpec, dict]:
    """The spec with the settings its weights' framework computes with (Keras: TensorFlow's SAME
    padding, batch-norm ε 1e-3, inputs in [-1, 1]) where the spec does not state them; what that
    changed, as {setting: {spec, used}}. A setting the spec states stands: a convention that differs
    from it is an error naming both (a weight source never silently replaces what the spec says)."""
    problems = Collector()
    changed = {}
    for name, (value, source) in conventions.items():
        stated = getattr(spec.settings, name)
        if stated == value:
            continue
        if name in spec.settings.locs:
            problems.error(
                f"the spec states {name} = {_setting(stated)} here, and the weights' framework computes with "
                f"{name} = {_setting(value)} (from {source}): a weight source never replaces what the spec states",
                spec.settings.locs[name],
                notes=[
                    (
                        f"write `{name} = {_setting(value)}` if the weights were trained so (or leave it out where "
                        "it may be left out), or give weights trained with the spec's value",
                        None,
                    )
                ],
            )
        else:
            changed[name] = {"spec": stated, "used": value}
    problems.raise_if_any()
    if not changed:
        return spec, {}
    settings = replace(spec.settings, **{name: c["used"] for name, c in changed.items()})
    return replace(spec, settings=settings), changed


def _setting(value) -> str:
    if isinstance(value, tuple):
        return ", ".join(_setting(v) for v in value)
    return f"{value + 0.0:g}" if isinstance(value, float) else str(value)  # + 0.0: no "-0"


def _classes_from_shapes(spec: CheckedSpec, alpha, rho, resolution, checkpoint: WeightsFile, layout: Layout):
    """The class count the checkpoint was made for, where its layout cannot read it from a classifier
    (a segmentation or detection head; mnc's own names): the shapes that depend on the class count
    do so linearly (c·k + b channels); solved from one of them, then checked on all. None where
    that does not give a count every shape agrees with (the spec's count is then used, and the
    mismatch reported as usual)."""

    def shapes(k: int) -> dict:
        return expected_shapes(build_graph(spec, spec.config(alpha, rho, resolution, k)), layout, checkpoint.tensors)

    try:
        k0 = spec.settings.classes
        at_k0, at_k1 = shapes(k0), shapes(k0 + 1)
        for key, shape in at_k0.items():
            if shape != at_k1[key] and key in checkpoint.tensors:
                axis = next(i for i, (a, b) in enumerate(zip(shape, at_k1[key])) if a != b)
                per_class, found = at_k1[key][axis] - shape[axis], checkpoint.tensors[key].shape[axis]
                k, rest = divmod(found - (shape[axis] - per_class * k0), per_class)
                if rest or k < 1 or k == k0:
                    return None
                fits = all(
                    key in checkpoint.tensors and tuple(checkpoint.tensors[key].shape) == tuple(s)
                    for key, s in shapes(k).items()
                )
                return k if fits else None
    except InputError:
        return None
    return None


def _add_fit_hint(
    exc: WeightsMismatch, spec: CheckedSpec, config: Config, checkpoint: WeightsFile, layout: Layout
) -> None:
    """If the checkpoint fits another common α exactly, say so: the usual cause of a mismatch."""
    for alpha in COMMON_ALPHAS:
        if alpha == config.alpha:
            continue
        try:
            other = build_graph(spec, spec.config(alpha, resolution=config.resolution, classes=config.classes))
            shapes = expected_shapes(other, layout, checkpoint.tensors)
        except InputError:
            continue
        if all(k in checkpoint.tensors and tuple(checkpoint.tensors[k].shape) == s for k, s in shapes.items()):
            exc.diagnostics[0].notes.append(
                (
                    f"these weights fit α = {alpha:g}, and this compile uses α = {config.alpha:g}; "
                    f"pass {param('alpha', alpha)}",
                    None,
                )
            )
            return
