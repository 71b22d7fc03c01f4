"""The spec's settings (`key = value` lines): their schema, checks and the α/ρ overrides."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mnc.errors import Collector, InputError, Loc, did_you_mean, one_of
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
}


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
    locs: dict[str, Loc] = field(default_factory=dict, compare=False)


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
        raise InputError(f"--classes {classes}: the number of classes must be at least 1")
    if rho is not None and resolution is not None:
        raise InputError("give either --rho or --resolution, not both")
    if alpha is not None and (message := alpha_problem(alpha)):
        raise InputError(f"--alpha {alpha:g}: {message}")
    if rho is not None and (message := rho_problem(rho, settings.base_resolution)):
        raise InputError(f"--rho {rho:g}: {message}")
    if resolution is not None and (message := resolution_problem(resolution)):
        raise InputError(f"--resolution {resolution}: {message}")
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
