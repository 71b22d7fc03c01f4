"""A build request: everything a compile, a verify or `mnc ir` is built from, made once (by the
command line from its arguments, by the Python API from its keywords, by a sweep for each variant)
and passed whole through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mnc.backends.target import TargetOptions
from mnc.errors import InputError, param
from mnc.quant.calibrate import DEFAULT_METHOD

if TYPE_CHECKING:
    from mnc.frontend import CheckedSpec
    from mnc.weights.files import WeightsFile

QUANTIZE_CHOICES = ("int8",)


@dataclass(frozen=True)
class Quantization:
    """Where the calibration data comes from and how it is read."""

    calib: str | None = None  # a folder of images, a .npy/.npz array, or "synthetic"
    samples: int = 100
    method: str = DEFAULT_METHOD
    progress: object = None  # progress(done, total) during calibration
    bias_correction: bool = True  # mnc/quant/bias_correction.py
    equalization: bool = True  # mnc/quant/equalization.py
    # How the data is named in the artifact and its report (default: calib as given). A sweep's
    # remote worker reads a copy of the data and names it as the user did: the same bytes result.
    name: str | None = None


def quantization(
    quantize: str | None,
    calib: str | None = None,
    samples: int = 100,
    method: str = DEFAULT_METHOD,
    name: str | None = None,
    progress=None,
    bias_correction: bool = True,
    equalization: bool = True,
) -> Quantization | None:
    """The quantisation asked for (None: a float build), from the caller's `quantize` and `calib`."""
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise InputError(f"{param('quantize', quantize)}: choose one of {', '.join(QUANTIZE_CHOICES)}")
    if calib is not None and quantize is None:
        raise InputError(f"{param('calib')} is for {param('quantize', 'int8')}")
    if not quantize:
        return None
    return Quantization(calib, samples, method, progress, bias_correction, equalization, name)


@dataclass(frozen=True)
class BuildRequest:
    """What to build. None: the spec's own value (the artifact's recorded one, for a verify)."""

    spec: CheckedSpec | str | Path | None  # None: a verify takes the spec recorded in the artifact
    alpha: float | None = None
    rho: float | None = None
    resolution: int | None = None
    classes: int | None = None  # None: the weights' classifier's, else the spec's
    weights: str | Path | WeightsFile | None = None  # None: initialised from the seed
    weights_layout: str | None = None  # None: detected from the tensor names
    seed: int | None = None  # None: 0 (a verify: the artifact's)
    max_memory: int | None = None
    # What a compile makes of the network.
    target: str | None = None  # None: the library's default target
    passes: str = "default"
    options: TargetOptions | None = field(default_factory=TargetOptions)
    quantization: Quantization | None = None

    def __post_init__(self):
        if self.options is None:  # a caller's "no target options"
            object.__setattr__(self, "options", TargetOptions())


def as_request(spec, fields: dict) -> BuildRequest:
    """A request given whole, or a spec with the request's other fields as keywords."""
    if isinstance(spec, BuildRequest):
        if fields:
            raise TypeError(f"a BuildRequest is given whole; also given: {', '.join(fields)}")
        return spec
    return BuildRequest(spec, **fields)
