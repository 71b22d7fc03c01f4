"""Comparison of an artifact's outputs with the reference's."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Float artifacts are compared element-wise. max_rel_err is the largest absolute error
    relative to the largest reference magnitude (the output's scale), which, unlike a
    per-element ratio, does not explode on outputs near zero."""

    max_rel_err: float = 1e-4
    min_cosine: float = 0.9999

    def as_dict(self) -> dict:
        return asdict(self)


FP32 = Tolerance()
# fp16 rounds every value to 11 significant bits (unit roundoff 2⁻¹¹ ≈ 4.9e-4) at each of a
# MobileNet's 30–60 layers, and the weights once; an image input adds three roundings of the
# pixels' normalisation. Measured with mnc's executor on V1 (α 0.25–1.0) and V2 (α 0.35–1.4) at
# 96–224 pixels, two seeds, float and image inputs (28 builds): max |error| up to 7.8 % of the
# output scale (the maximum is heavy-tailed), cosine never below 0.99920. The tolerance is about
# twice that. Damage to the artifact (a corrupted weight block, a dropped op) lands far outside it
# (tests/test_coreml.py); a perturbation smaller than fp16's own noise cannot be told apart in fp16.
# It gates Core ML itself (macOS), whose accumulation inside an op mnc cannot see; mnc's executor is
# checked layer by layer against derived bounds, and its whole-network figures only reported.
FP16 = Tolerance(max_rel_err=0.15, min_cosine=0.998)


@dataclass(frozen=True)
class Comparison:
    max_abs_err: float
    max_rel_err: float
    cosine: float
    top1_agreement: float | None
    reference_scale: float

    def passes(self, tol: Tolerance) -> bool:
        return self.max_rel_err <= tol.max_rel_err and self.cosine >= tol.min_cosine

    def as_dict(self) -> dict:
        return asdict(self)


def compare(actual: np.ndarray, reference: np.ndarray, classes: bool = True) -> Comparison:
    if actual.shape != reference.shape:
        raise ValueError(f"output shape {actual.shape} differs from the reference's {reference.shape}")
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        top1 = 0.0 if classes and a.ndim == 2 else None
        return Comparison(float("inf"), float("inf"), 0.0, top1, float(np.abs(r).max()))
    abs_err = float(np.abs(a - r).max())
    scale = float(np.abs(r).max())
    denom = float(np.linalg.norm(a) * np.linalg.norm(r))
    cosine = float(np.dot(a.ravel(), r.ravel()) / denom) if denom > 0 else float(abs_err == 0)
    # Top-1 agreement only of class scores: not of boxes, masks or several outputs joined.
    top1 = float(np.mean(a.argmax(axis=1) == r.argmax(axis=1))) if classes and a.ndim == 2 else None
    return Comparison(abs_err, abs_err / scale if scale > 0 else abs_err, cosine, top1, scale)
