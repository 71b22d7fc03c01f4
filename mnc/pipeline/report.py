"""The report written beside every artifact (`<artifact>.report.json`), as dataclasses. Their
fields, in order, are the JSON's keys; docs/report.md describes each. A field that is None is left
out of the JSON where it is marked optional (a section only some builds have)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass

from mnc.verification.result import FloatVerification, Int8Verification

# 1: the report as it was before it carried a version, plus this field.
SCHEMA_VERSION = 1
REPORT_SUFFIX = ".report.json"  # beside the artifact, named after it: every artifact keeps its own

OPTIONAL = {"optional": True}  # field metadata: None is left out of the JSON


def json_form(value):
    """A report section as JSON values: dataclasses by their fields, results by their as_dict()."""
    if is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "as_dict"):
            return value.as_dict()
        return {
            f.name: json_form(getattr(value, f.name))
            for f in fields(value)
            if not (f.metadata.get("optional") and getattr(value, f.name) is None)
        }
    if isinstance(value, list):
        return [json_form(v) for v in value]
    return value


@dataclass(frozen=True)
class SpecSource:
    path: str
    name: str  # the spec's `name` setting
    sha256: str  # of the spec's text


@dataclass(frozen=True)
class WeightsSource:
    """Seeded (seed, init) or from a file (file, sha256, layout, conventions)."""

    seed: int | None = field(default=None, metadata=OPTIONAL)
    init: str | None = field(default=None, metadata=OPTIONAL)
    file: str | None = field(default=None, metadata=OPTIONAL)
    sha256: str | None = field(default=None, metadata=OPTIONAL)
    layout: str | None = field(default=None, metadata=OPTIONAL)
    # setting → {"spec": its value in the spec, "used": the weights' framework's}, where they differ
    conventions: dict | None = field(default=None, metadata=OPTIONAL)
    saved_to: str | None = field(default=None, metadata=OPTIONAL)  # --save-weights


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: list  # the batch ("batch" where symbolic, else its size), then the sizes in the target's layout


@dataclass(frozen=True)
class ArtifactFile:
    path: str
    size_bytes: int
    sha256: str
    input: Tensor
    output: Tensor  # the first of outputs (for a classifier, the only one)
    outputs: list[Tensor]
    anchors: str | None = field(default=None, metadata=OPTIONAL)  # the SSD default boxes beside it


@dataclass(frozen=True)
class QuantizationInfo:
    scheme: str
    weight_bits: int
    depthwise_weight_bits: int
    calibration: str  # the data, in words
    method: str
    samples: int
    synthetic: bool
    bias_overflow_resolved: list
    # samples, layers, channels (equalised by a power of two); None: not equalised
    equalization: dict | None
    # samples, layers, largest_shift_output_steps; None: built without bias correction
    bias_correction: dict | None
    activation_ranges: dict[str, list[float]]
    # Each quantised layer's error against fp32 on a few of the user's calibration images
    # (mnc/quant/debug.py): {"samples": n, "of": [LayerError.as_dict(), …]}; None for synthetic data.
    layers: dict | None = field(default=None, metadata=OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class Report:
    schema_version: int = SCHEMA_VERSION
    mnc_version: str
    spec: SpecSource
    alpha: float
    resolution: int
    rho: float
    classes: int
    seed: int
    target: str
    weights: WeightsSource
    passes: list[dict]  # each pass's record, in the order they ran
    # Each rewrite the target asked for before lowering (mnc/passes/rewrites.py), in the order they ran.
    rewrites: list[dict] | None = field(default=None, metadata=OPTIONAL)
    macs: int
    params: int
    artifact: ArtifactFile
    verification: FloatVerification | Int8Verification
    quantization: QuantizationInfo | None = field(default=None, metadata=OPTIONAL)
    # What the target says of the artifact; its JSON key is the target's name.
    target_section: dict | None = field(default=None, metadata=OPTIONAL)
    timings_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        plain = {
            f.name: json_form(getattr(self, f.name))
            for f in fields(self)
            if not (f.metadata.get("optional") and getattr(self, f.name) is None)
        }
        if "target_section" in plain:
            plain = {(self.target if k == "target_section" else k): v for k, v in plain.items()}
        return plain


@dataclass(frozen=True)
class VerifiedSpec:
    path: str
    sha256: str
    matches_artifact: bool  # the spec the artifact was built from (its recorded hash) is this one


@dataclass(frozen=True, kw_only=True)
class Verified:
    """What `mnc verify` found: the verification, and what the reference was rebuilt from. Its JSON
    (`mnc verify --json`) is the verification section with these fields after it."""

    verification: FloatVerification | Int8Verification
    artifact: str
    spec: VerifiedSpec
    alpha: float
    resolution: int
    classes: int
    seed: int
    weights: WeightsSource

    def as_dict(self) -> dict:
        rest = {f.name: json_form(getattr(self, f.name)) for f in fields(self) if f.name != "verification"}
        return {**self.verification.as_dict(), **rest}


def report_bytes(report: dict) -> bytes:
    """A report as written beside its artifact."""
    return (json.dumps(report, indent=2) + "\n").encode()
