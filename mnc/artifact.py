"""The artifact record: what every artifact mnc writes carries about how it was built, so that
`mnc verify` can rebuild its reference. The single definition of mnc's metadata keys: targets
store `to_metadata()` in their format's metadata and give it back for `from_metadata`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from mnc.errors import InputError

PREFIX = "mnc."


@dataclass(frozen=True)
class ArtifactRecord:
    version: str
    spec_name: str
    spec_sha256: str
    spec_text: str
    alpha: float
    resolution: int
    classes: int
    seed: int
    passes: tuple[str, ...]
    weights_sha256: str | None = None  # built from a weights file (else from the seed)
    weights_layout: str | None = None
    # What the target says of its options (None: the target has no such option).
    precision: str | None = None
    image_input: bool | None = None
    batch: int | None = None  # the batch the input and outputs are fixed to (None: symbolic, or no batch option)
    mobile_ops: bool | None = None  # ONNX Runtime Mobile's operators (None: the target's own, or no such option)
    # int8 artifacts: the scheme in words, the calibration data, and what rebuilds the quantised IR.
    quantization: str | None = None
    calibration: str | None = None
    weight_bits: int | None = None
    depthwise_weight_bits: int | None = None
    int8_activations: bool | None = None
    activation_ranges: dict[str, list[float]] | None = None
    bias_corrections: dict[str, list[int]] | None = None  # steps added to each corrected int32 bias
    equalization: dict[str, list[int]] | None = None  # doublings of each equalised convolution's channels

    @property
    def quantized(self) -> bool:
        return self.activation_ranges is not None

    def to_metadata(self, *, with_spec_text: bool = True) -> dict[str, str]:
        """String keys and values, in a fixed order (ONNX keeps the order in the file)."""
        fields = {
            "version": self.version,
            "spec_name": self.spec_name,
            "spec_sha256": self.spec_sha256,
            "spec_text": self.spec_text if with_spec_text else None,
            "alpha": repr(self.alpha),
            "resolution": str(self.resolution),
            "classes": str(self.classes),
            "seed": str(self.seed),
            "passes": ",".join(self.passes),
            "weights_sha256": self.weights_sha256,
            "weights_layout": self.weights_layout if self.weights_sha256 else None,
            "precision": self.precision,
            "image_input": _flag(self.image_input),
            "batch": None if self.batch is None else str(self.batch),
            "mobile_ops": _flag(self.mobile_ops),
            "quantization": self.quantization,
            "calibration": self.calibration,
            "weight_bits": None if self.weight_bits is None else str(self.weight_bits),
            "depthwise_weight_bits": None if self.depthwise_weight_bits is None else str(self.depthwise_weight_bits),
            "int8_activations": _flag(self.int8_activations),
            "activation_ranges": None
            if self.activation_ranges is None
            else json.dumps(self.activation_ranges, sort_keys=True),
            "bias_corrections": None
            if self.bias_corrections is None
            else json.dumps(self.bias_corrections, sort_keys=True, separators=(",", ":")),
            "equalization": None
            if self.equalization is None
            else json.dumps(self.equalization, sort_keys=True, separators=(",", ":")),
        }
        return {PREFIX + k: v for k, v in fields.items() if v is not None}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], shown: str) -> "ArtifactRecord | None":
        """The record in an artifact's metadata; None if it was not built by mnc, InputError if damaged."""
        m = {k[len(PREFIX) :]: v for k, v in meta.items() if k.startswith(PREFIX)}
        if "spec_text" not in m:
            return None
        try:
            return cls(
                version=m.get("version", ""),
                spec_name=m.get("spec_name", ""),
                spec_sha256=m.get("spec_sha256", ""),
                spec_text=m["spec_text"],
                alpha=float(m["alpha"]),
                resolution=int(m["resolution"]),
                classes=int(m["classes"]),
                seed=int(m.get("seed", 0)),
                passes=tuple(p for p in m.get("passes", "").split(",") if p),
                weights_sha256=m.get("weights_sha256"),
                weights_layout=m.get("weights_layout"),
                precision=m.get("precision"),
                image_input=_parse_flag(m.get("image_input")),
                batch=int(m["batch"]) if "batch" in m else None,
                mobile_ops=_parse_flag(m.get("mobile_ops")),
                quantization=m.get("quantization"),
                calibration=m.get("calibration"),
                weight_bits=int(m["weight_bits"]) if "weight_bits" in m else None,
                depthwise_weight_bits=int(m["depthwise_weight_bits"]) if "depthwise_weight_bits" in m else None,
                int8_activations=_parse_flag(m.get("int8_activations")),
                activation_ranges=json.loads(m["activation_ranges"]) if "activation_ranges" in m else None,
                bias_corrections=json.loads(m["bias_corrections"]) if "bias_corrections" in m else None,
                equalization=json.loads(m["equalization"]) if "equalization" in m else None,
            )
        except (KeyError, ValueError) as exc:
            raise InputError(f"'{shown}' has damaged mnc metadata ({type(exc).__name__}: {exc})") from None


def _flag(value: bool | None) -> str | None:
    return None if value is None else str(value).lower()


def _parse_flag(text: str | None) -> bool | None:
    return None if text is None else text == "true"
