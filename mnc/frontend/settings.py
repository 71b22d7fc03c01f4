"""The spec's settings (`key = value` lines): their schema, checks and the α/ρ overrides."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from mnc.errors import Collector, InputError, Loc, did_you_mean, one_of, param
from mnc.frontend.ast import Setting, Value
from mnc.frontend.rounding import POLICIES, WidthRounding
from mnc.ir import activations

MAX_ALPHA = 4.0  # beyond this a "mobile" network has 16× the weights of α = 1: a typo, not a plan
MAX_RESOLUTION = 4096
PADDINGS = {
    "same": "TensorFlow 'SAME': output ⌈size/stride⌉, the odd padding pixel at the bottom/right",
    "symmetric": "(k-1)/2 pixels on every side, as PyTorch's reference models pad",
}


@dataclass(frozen=True)
class Field:
    kind: str  # name | string | int | float | floats | choice | rounding
    doc: str
    required: bool = False
    default: object = None
    choices: tuple[str, ...] = ()


FIELDS: dict[str, Field] = {
    "name": Field("name", "the network's name", required=True),
    "description": Field("string", "one line saying what the network is", default=""),
    "author": Field("string", "who made the network (artifact metadata)", default=""),
    "license": Field("string", "the license of the network and its weights (artifact metadata)", default=""),
    "version": Field("string", "the version of the network (artifact metadata)", default=""),
    "input_channels": Field("int", "channels of the input image", required=True),
    "base_resolution": Field("int", "input height and width at ρ = 1", required=True),
    "alpha": Field("float", "default width multiplier α", default=1.0),
    "rho": Field("float", "default resolution multiplier ρ (resolution = round(base_resolution·ρ))"),
    "resolution": Field("int", "default input resolution, instead of rho"),
    "classes": Field("int", "number of classes; the value of k in the tables", required=True),
    "activation": Field(
        "choice", "activation of layers that do not say otherwise", required=True, choices=activations.NONLINEAR
    ),
    "width_rounding": Field(
        "rounding", "how c·α becomes a channel count: truncate(min=N) or make_divisible(divisor=N)", required=True
    ),
    "padding": Field(
        "choice",
        "how convolutions pad: " + "; ".join(f"{k}: {v}" for k, v in PADDINGS.items()),
        required=True,
        choices=tuple(PADDINGS),
    ),
    "batchnorm_eps": Field(
        "float", "ε of every batch norm (PyTorch's default 1e-5; torchvision's MobileNetV3: 0.001)", default=1e-5
    ),
    "mean": Field("floats", "per-channel mean subtracted from input pixels in [0, 1]"),
    "std": Field("floats", "per-channel standard deviation the input is divided by"),
    "outputs": Field("names", "the network's outputs: taps, in order (default: the last row's output)", default=()),
    "anchors": Field(
        "anchors",
        "default boxes of a detection output, written beside the artifact: "
        "ssd(output=NAME, min_ratio=0.2, max_ratio=0.95, aspect_ratios=ratios(2, 3))",
    ),
}
# What a `part` may set for its own rows; the rest are settings of the whole network.
PART_FIELDS = ("activation", "batchnorm_eps", "padding", "width_rounding")


@dataclass(frozen=True)
class Settings:
    """The spec's declared defaults, checked."""

    name: str
    description: str
    author: str
    license: str
    version: str
    input_channels: int
    base_resolution: int
    alpha: float
    rho: float | None
    resolution: int | None
    classes: int
    activation: str
    width_rounding: WidthRounding
    padding: str
    batchnorm_eps: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    outputs: tuple[str, ...] = ()
    anchors: "AnchorSpec | None" = None
    locs: dict[str, Loc] = field(default_factory=dict, compare=False)
    # The settings each `part` changes: part name → {key: value}; its locs under "part.key".
    parts: dict = field(default_factory=dict, compare=False)

    def of_part(self, part: str) -> "Settings":
        """The settings the rows of one part are built with."""
        changes = self.parts.get(part)
        return dataclasses.replace(self, **changes) if changes else self


@dataclass(frozen=True)
class AnchorSpec:
    """SSD default boxes (torchvision's DefaultBoxGenerator) for one detection output."""

    output: str
    min_ratio: float
    max_ratio: float
    aspect_ratios: tuple[float, ...]
    loc: Loc

    @property
    def per_location(self) -> int:
        return 2 + 2 * len(self.aspect_ratios)


@dataclass(frozen=True)
class Config:
    """What one compile builds: the settings with α and the resolution decided."""

    settings: Settings
    alpha: float
    resolution: int
    classes: int

    @property
    def rho(self) -> float:
        return self.resolution / self.settings.base_resolution


def check_settings(settings: list[Setting], problems: Collector, path: str) -> Settings | None:
    network = [s for s in settings if s.part is None]
    checked = _check_network_settings(network, problems, path)
    parts = _check_part_settings([s for s in settings if s.part is not None], problems)
    return dataclasses.replace(checked, parts=parts) if checked is not None else None


def _check_part_settings(settings: list[Setting], problems: Collector) -> dict:
    parts: dict[str, dict] = {}
    seen: dict[tuple, Setting] = {}
    for s in settings:
        if s.key not in PART_FIELDS:
            where = "an unknown setting" if s.key not in FIELDS else "a setting of the whole network"
            hint = did_you_mean(s.key, PART_FIELDS) if s.key not in FIELDS else ""
            problems.error(
                f"'{s.key}' is {where}{hint}; a part may set {one_of(PART_FIELDS)}"
                + ("; write network settings above the first `part` line" if s.key in FIELDS else ""),
                s.loc,
            )
            continue
        if (s.part, s.key) in seen:
            problems.error(
                f"'{s.key}' is set twice in part '{s.part}'", s.loc, notes=[("first set here", seen[s.part, s.key].loc)]
            )
            continue
        seen[s.part, s.key] = s
        value = _convert(s, FIELDS[s.key], problems)
        if value is None:
            continue
        if s.key == "batchnorm_eps" and not value > 0:
            problems.error(f"'batchnorm_eps' must be > 0, got {value:g}", s.values[0].loc)
            continue
        parts.setdefault(s.part, {})[s.key] = value
    return parts


def _check_network_settings(settings: list[Setting], problems: Collector, path: str) -> Settings | None:
    seen: dict[str, Setting] = {}
    values: dict[str, object] = {}
    suggested: set[str] = set()  # a misspelt key already reported need not be reported missing too
    for s in settings:
        spec = FIELDS.get(s.key)
        if spec is None:
            hint = did_you_mean(s.key, FIELDS)
            problems.error(f"unknown setting '{s.key}'" + hint, s.loc)
            suggested.update(k for k in FIELDS if hint and f"'{k}'" in hint)
            continue
        if s.key in seen:
            problems.error(f"'{s.key}' is set twice", s.loc, notes=[("first set here", seen[s.key].loc)])
            continue
        seen[s.key] = s
        value = _convert(s, spec, problems)
        if value is not None:
            values[s.key] = value
    if "rho" in seen and "resolution" in seen:
        problems.error(
            "set either 'rho' or 'resolution', not both",
            seen["resolution"].loc,
            notes=[("'rho' is set here", seen["rho"].loc)],
        )
    for key, spec in FIELDS.items():
        if spec.required and key not in seen and key not in suggested:
            problems.error(f"missing required setting '{key}' ({spec.doc})", Loc(path, 1, 1))
    locs = {k: s.values[0].loc for k, s in seen.items()}
    _check_ranges(values, locs, problems)
    if any(spec.required and key not in values for key, spec in FIELDS.items()):
        return None
    channels = values["input_channels"]
    for key, default in (("mean", 0.0), ("std", 1.0)):
        if key in values and len(values[key]) != channels:
            problems.error(f"'{key}' has {len(values[key])} values but the input has {channels} channels", locs[key])
        values.setdefault(key, (default,) * channels)
    return Settings(
        **{k: values.get(k, FIELDS[k].default) for k in FIELDS},
        locs=locs,
    )


def _convert(s: Setting, spec: Field, problems: Collector):
    first = s.values[0]
    if spec.kind == "names":
        if any(v.kind != "name" for v in s.values):
            problems.error(f"'{s.key}' takes names separated by commas", first.loc)
            return None
        names = tuple(str(v.value) for v in s.values)
        for i, name in enumerate(names):
            if name in names[:i]:
                problems.error(f"'{name}' is named twice", s.values[i].loc)
                return None
        return names
    if spec.kind == "anchors":
        return _anchors(s, problems)
    if spec.kind == "floats":
        numbers = [v.value for v in s.values if v.kind == "number"]
        if len(numbers) != len(s.values):
            problems.error(f"'{s.key}' takes numbers separated by commas", first.loc)
            return None
        return tuple(float(v) for v in numbers)
    if len(s.values) > 1:
        problems.error(f"'{s.key}' takes one value, got {len(s.values)}", s.values[1].loc)
        return None
    if spec.kind in ("int", "float"):
        if first.kind != "number" or (spec.kind == "int" and not isinstance(first.value, int)):
            what = "a whole number" if spec.kind == "int" else "a number"
            problems.error(f"'{s.key}' must be {what}, got '{first.describe()}'", first.loc)
            return None
        return first.value if spec.kind == "int" else float(first.value)
    if spec.kind == "name":
        if first.kind not in ("name", "string"):
            problems.error(f"'{s.key}' must be a name, got '{first.describe()}'", first.loc)
            return None
        return str(first.value)
    if spec.kind == "string":
        if first.kind != "string":
            problems.error(f"'{s.key}' must be a quoted string", first.loc)
            return None
        return first.value
    if spec.kind == "choice":
        if first.kind != "name" or first.value not in spec.choices:
            word = first.describe()
            problems.error(
                f"'{s.key}' must be one of {one_of(spec.choices)}, got '{word}'" + did_you_mean(word, spec.choices),
                first.loc,
            )
            return None
        return first.value
    return _rounding(first, problems)


ANCHOR_USAGE = "write ssd(output=NAME, min_ratio=0.2, max_ratio=0.95, aspect_ratios=ratios(2, 3))"


def _anchors(s: Setting, problems: Collector) -> AnchorSpec | None:
    v = s.values[0]
    if len(s.values) > 1 or v.kind != "call" or v.value != "ssd":
        problems.error(f"'anchors' must be ssd(...); {ANCHOR_USAGE}", v.loc)
        return None
    args = {}
    for a in v.args:
        if a.key not in ("output", "min_ratio", "max_ratio", "aspect_ratios"):
            problems.error(f"ssd() has no argument {a.key or a.value.describe()!r}; {ANCHOR_USAGE}", a.loc)
            return None
        if a.key in args:
            problems.error(f"ssd() argument '{a.key}' is given twice", a.loc)
            return None
        args[a.key] = a.value
    missing = [k for k in ("output", "min_ratio", "max_ratio", "aspect_ratios") if k not in args]
    if missing:
        problems.error(f"ssd() needs {', '.join(missing)}; {ANCHOR_USAGE}", v.loc)
        return None
    ratios = args["aspect_ratios"]
    numbers = [args["min_ratio"], args["max_ratio"], *(a.value for a in ratios.args)]
    if args["output"].kind != "name" or ratios.kind != "call" or ratios.value != "ratios" or not ratios.args:
        problems.error(f"'anchors': {ANCHOR_USAGE}", v.loc)
        return None
    for n in numbers:
        if n.kind != "number" or not n.value > 0:
            problems.error(f"expected a number > 0, got '{n.describe()}'", n.loc)
            return None
    low, high = float(args["min_ratio"].value), float(args["max_ratio"].value)
    if not low < high <= 1:
        problems.error(f"need 0 < min_ratio < max_ratio ≤ 1, got {low:g} and {high:g}", v.loc)
        return None
    return AnchorSpec(str(args["output"].value), low, high, tuple(float(a.value.value) for a in ratios.args), v.loc)


def _rounding(v: Value, problems: Collector) -> WidthRounding | None:
    usage = "write truncate(min=8) or make_divisible(divisor=8)"
    if v.kind != "call":
        problems.error(f"'width_rounding' must be a policy call; {usage}", v.loc)
        return None
    if v.value not in POLICIES:
        problems.error(
            f"unknown width rounding policy '{v.value}'" + did_you_mean(v.value, POLICIES) + f"; {usage}", v.loc
        )
        return None
    key = POLICIES[v.value]
    if len(v.args) != 1 or v.args[0].key not in (None, key):
        problems.error(f"'{v.value}' takes one argument, {key}=N", v.loc)
        return None
    arg = v.args[0].value
    if arg.kind != "number" or not isinstance(arg.value, int) or arg.value < 1:
        problems.error(f"'{key}' must be a whole number ≥ 1", arg.loc)
        return None
    return WidthRounding(v.value, arg.value)


def _check_ranges(values: dict, locs: dict[str, Loc], problems: Collector) -> None:
    for key in ("input_channels", "base_resolution", "classes"):
        if key in values and values[key] < 1:
            problems.error(f"'{key}' must be at least 1, got {values[key]}", locs[key])
    if values.get("base_resolution", 0) > MAX_RESOLUTION:
        problems.error(
            f"'base_resolution' {values['base_resolution']} is too large (at most {MAX_RESOLUTION})",
            locs["base_resolution"],
        )
    if "alpha" in values:
        message = alpha_problem(values["alpha"])
        if message:
            problems.error(message, locs["alpha"])
    if "rho" in values and values.get("base_resolution", 0) <= MAX_RESOLUTION:
        message = rho_problem(values["rho"], values.get("base_resolution"))
        if message:
            problems.error(message, locs["rho"])
    if "resolution" in values:
        message = resolution_problem(values["resolution"])
        if message:
            problems.error(message, locs["resolution"])
    if "batchnorm_eps" in values and not values["batchnorm_eps"] > 0:
        problems.error(f"'batchnorm_eps' must be > 0, got {values['batchnorm_eps']:g}", locs["batchnorm_eps"])
    for i, s in enumerate(values.get("std", ())):
        if s <= 0:
            problems.error(f"'std' values must be > 0; value {i + 1} is {s}", locs["std"])


def alpha_problem(alpha: float) -> str | None:
    if not alpha > 0 or not math.isfinite(alpha):
        return f"width multiplier α must be > 0, got {alpha:g}"
    if alpha > MAX_ALPHA:
        return f"width multiplier α = {alpha:g} is too large (at most {MAX_ALPHA:g}; the papers use 0.25–1.4)"
    return None


def rho_problem(rho: float, base: int | None) -> str | None:
    if not rho > 0:
        return f"resolution multiplier ρ must be > 0, got {rho:g}"
    if not math.isfinite(rho) or rho > MAX_RESOLUTION:
        return f"resolution multiplier ρ = {rho:g} is too large"
    if base and base >= 1:
        return resolution_problem(round(base * rho), f"ρ = {rho:g} gives resolution round({base}·{rho:g}) = ")
    return None


def resolution_problem(resolution: int, prefix: str = "resolution ") -> str | None:
    if resolution < 1:
        return f"{prefix}{resolution}: the input must be at least 1×1"
    if resolution > MAX_RESOLUTION:
        return f"{prefix}{resolution} is too large (at most {MAX_RESOLUTION})"
    return None


def resolve(
    settings: Settings,
    alpha: float | None = None,
    rho: float | None = None,
    resolution: int | None = None,
    classes: int | None = None,
) -> Config:
    """Apply command-line overrides. An override that cannot work is an error naming the option."""
    if classes is not None and classes < 1:
        raise InputError(f"{param('classes', classes)}: the number of classes must be at least 1")
    if rho is not None and resolution is not None:
        raise InputError(f"give either {param('rho')} or {param('resolution')}, not both")
    if alpha is not None and (message := alpha_problem(alpha)):
        raise InputError(f"{param('alpha', alpha)}: {message}")
    if rho is not None and (message := rho_problem(rho, settings.base_resolution)):
        raise InputError(f"{param('rho', rho)}: {message}")
    if resolution is not None and (message := resolution_problem(resolution)):
        raise InputError(f"{param('resolution', resolution)}: {message}")
    if resolution is None:
        if rho is None and settings.resolution is not None:
            resolution = settings.resolution
        else:
            rho = rho if rho is not None else (settings.rho if settings.rho is not None else 1.0)
            resolution = round(settings.base_resolution * rho)
    return Config(
        settings,
        float(alpha if alpha is not None else settings.alpha),
        int(resolution),
        classes if classes is not None else settings.classes,
    )
