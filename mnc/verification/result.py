"""Typed verification results: what was compared with what, the figures, and the verdict. The
report's 'verification' section is their as_dict(); a failed one explains itself in one line."""

from __future__ import annotations

from dataclasses import dataclass, field

from mnc.backends.target import Check
from mnc.verification import reference
from mnc.verification.bounds import TOLERANCE_SIGMAS
from mnc.verification.constants import ConstantsCheck
from mnc.verification.metrics import FP32, Comparison, Tolerance


def _failure(what: str, reasons: list[str]) -> str:
    """One line: the first reason in full, then the other checks that failed too."""
    if not reasons:
        return f"verification of {what} failed"
    also = "".join(f"; also{r if r.startswith(' ') else ' ' + r.lstrip(': ')}" for r in reasons[1:])
    return f"verification of {what} failed{reasons[0]}{also}"


def _verdict(passed: bool) -> str:
    return "pass" if passed else "fail"


def _named(checks: list[Check], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    if not found:
        raise KeyError(f"no check '{name}' (checks: {', '.join(c.name for c in checks) or 'none'})")
    return found[0]


@dataclass(frozen=True)
class ReferenceCheck:
    """The reference (ONNX Runtime) against mnc's float64 interpreter, both on the unoptimised IR:
    every element within the rounding error a float32 evaluation can make there (bounds.py)."""

    comparison: Comparison
    exceedance: float  # the largest error as a multiple of what is allowed there

    @property
    def passed(self) -> bool:
        return self.exceedance <= 1 and self.comparison.cosine >= FP32.min_cosine

    def as_dict(self) -> dict:
        return {
            "against": reference.CHECK_DESCRIPTION,
            "metrics": {**self.comparison.as_dict(), "exceedance": round(self.exceedance, 4)},
            "tolerance": DERIVED_FP32,
            "verdict": _verdict(self.passed),
        }

    def reason(self) -> str:
        c = self.comparison
        return (
            f": the reference ({reference.DESCRIPTION}) disagrees with "
            f"{reference.CHECK_DESCRIPTION}: max relative error {c.max_rel_err:.3g} ({self.exceedance:.3g} times "
            f"the rounding error a float32 evaluation can make there), cosine {c.cosine:.6f}"
        )


DERIVED_FP32 = {
    "rule": f"every element within {TOLERANCE_SIGMAS:g} standard deviations of the float32 rounding error derived "
    f"from the computation (mnc/verification/bounds.py), and cosine ≥ {FP32.min_cosine}",
}


@dataclass
class ExecutorRun:
    executor: str
    comparison: Comparison | None = None
    passed: bool = False
    error: str | None = None
    exceedance: float | None = None  # fp32: the largest error as a multiple of what is allowed there

    @property
    def reported_exceedance(self) -> float | None:
        """The exceedance as the report gives it."""
        return None if self.exceedance is None else round(self.exceedance, 4)

    def as_dict(self) -> dict:
        metrics = self.comparison.as_dict() if self.comparison else None
        if metrics is not None and self.exceedance is not None:
            metrics["exceedance"] = self.reported_exceedance
        run = {"executor": self.executor, "metrics": metrics}
        if self.error is not None:
            run["error"] = self.error
        if self.comparison is not None:
            run["verdict"] = _verdict(self.passed)
        return run


@dataclass
class FloatVerification:
    """A float artifact, run by each of its target's executors, against the reference, element-wise."""

    reference_check: ReferenceCheck
    inputs: str
    tolerance: Tolerance
    precision: str
    runs: list[ExecutorRun] = field(default_factory=list)
    constants: ConstantsCheck | None = None
    checks: list[Check] = field(default_factory=list)  # fp16 computed in float16: layer by layer
    fp16_weights_only: bool = False  # fp16 weights, float32 arithmetic: the derived bound applies

    @property
    def passed(self) -> bool:
        constants_ok = self.constants is None or self.constants.passed
        checks_ok = all(c.passed for c in self.checks)
        return self.reference_check.passed and all(r.passed for r in self.runs) and constants_ok and checks_ok

    def _tolerance(self) -> dict:
        if self.layered:
            return {
                "rule": "each layer within its derived float16 bound (the layers section); mnc's executor's whole "
                "network against the fp32 reference reported; Core ML itself (macOS) within the measured tolerance",
                "reported_max_rel_err": self.tolerance.max_rel_err,
                "precision": self.precision,
            }
        if self.precision == "fp16" and not self.fp16_weights_only:
            return {**self.tolerance.as_dict(), "precision": self.precision}
        rounded = (
            "; the reference's weights rounded to float16 as the artifact stores them" if self.fp16_weights_only else ""
        )
        return {
            **DERIVED_FP32,
            "rule": DERIVED_FP32["rule"] + rounded,
            "min_cosine": self.tolerance.min_cosine,
            "precision": self.precision,
        }

    @property
    def reference(self) -> str:
        """What the artifact was compared with, in words."""
        return reference.DESCRIPTION

    def check(self, name: str) -> Check:
        """The check of this name (its report section is its `section`)."""
        return _named(self.checks, name)

    @property
    def layered(self) -> bool:
        """Checked layer by layer (fp16 computed in float16); the whole network's figures reported."""
        return any(c.name == "layers" for c in self.checks)

    def as_dict(self) -> dict:
        first = self.runs[0].as_dict()
        result = {
            "reference": self.reference,
            "reference_check": self.reference_check.as_dict(),
            "inputs": self.inputs,
            "tolerance": self._tolerance(),
            "runs": [r.as_dict() for r in self.runs],
            **{c.name: {**c.section, **({"summary": c.summary} if c.summary else {})} for c in self.checks},
            "verdict": _verdict(self.passed),
            "executor": first["executor"],  # the main run, at the top level
            "metrics": first["metrics"],
        }
        if "error" in first:
            result["error"] = first["error"]
        if self.constants is not None:
            result["constants"] = self.constants.as_dict()
        return result

    def failure(self, what: str) -> str:
        reasons = [self.reference_check.reason()] if not self.reference_check.passed else []
        t = self.tolerance
        for run in self.runs:
            if run.passed:
                continue
            if run.comparison is None:
                detail = run.error or "no output"
            else:
                m = run.comparison
                allowed = (
                    f"{run.exceedance:.3g} times the rounding error derived for this computation"
                    if run.exceedance is not None
                    else f"tolerance {t.max_rel_err:g}"
                )
                detail = (
                    f"max relative error {m.max_rel_err:.3g} ({allowed}), cosine {m.cosine:.6f} "
                    f"(minimum {t.min_cosine:g})"
                )
            reasons.append(f" against the reference ({reference.DESCRIPTION}) with {run.executor}: {detail}")
        reasons += [f": {check.failure}" for check in self.checks if not check.passed]
        if self.constants is not None and not self.constants.passed:
            reasons.append(self.constants.reason())
        return _failure(what, reasons)


INT8_MIN_COSINE = 0.99  # of the artifact against mnc's fake-quant reference


@dataclass
class Int8Verification:
    """An int8 artifact against mnc's fake-quant interpreter of the quantised IR (gating) and the
    fp32 reference (what quantisation costs, reported), by SQNR, cosine and top-1, never element-wise."""

    reference_check: ReferenceCheck
    activations: bool  # False: int8 weights only, float activations
    executor: str
    inputs: str
    versus_fake_quant: dict
    versus_fp32: dict
    checks: list[Check]
    worst_layers: list[tuple[str, float]]
    end_to_end_gate: bool = True
    constants: ConstantsCheck | None = None

    @property
    def passed(self) -> bool:
        return (
            (self.versus_fake_quant["cosine"] >= INT8_MIN_COSINE or not self.end_to_end_gate)
            and all(c.passed for c in self.checks)
            and self.reference_check.passed
            and (self.constants is None or self.constants.passed)
        )

    def check(self, name: str) -> Check:
        """The check of this name (its report section is its `section`)."""
        return _named(self.checks, name)

    @property
    def reference(self) -> str:
        """What the artifact was compared with, in words."""
        return (
            "mnc fake-quant interpreter of the quantised IR"
            + ("" if self.activations else ", int8 weights only")
            + (" (gating); " if self.end_to_end_gate else " (gating layer by layer; the whole network reported); ")
            + reference.DESCRIPTION
            + " (reported)"
        )

    def as_dict(self) -> dict:
        return {
            "reference": self.reference,
            "reference_check": self.reference_check.as_dict(),
            "executor": self.executor,
            "inputs": self.inputs,
            "metrics": self.versus_fake_quant,
            "versus_fp32": self.versus_fp32,
            **{c.name: {**c.section, **({"summary": c.summary} if c.summary else {})} for c in self.checks},
            **({"constants": self.constants.as_dict()} if self.constants is not None else {}),
            "worst_layers_sqnr_db": [{"layer": n, "sqnr_db": round(v, 2)} for n, v in self.worst_layers],
            "tolerance": {
                "min_cosine_vs_fake_quant": INT8_MIN_COSINE if self.end_to_end_gate else None,
                "precision": "int8",
            },
            "verdict": _verdict(self.passed),
        }

    def failure(self, what: str) -> str:
        reasons = [self.reference_check.reason()] if not self.reference_check.passed else []
        reasons += [f": {check.failure}" for check in self.checks if not check.passed]
        m = self.versus_fake_quant
        if self.end_to_end_gate and m["cosine"] < INT8_MIN_COSINE:
            reasons.append(
                f": against mnc's fake-quant reference cosine {m['cosine']:.5f} (minimum {INT8_MIN_COSINE}), "
                f"SQNR {m['sqnr_db']} dB"
            )
        if self.constants is not None and not self.constants.passed:
            reasons.append(self.constants.reason())
        return _failure(what, reasons)
