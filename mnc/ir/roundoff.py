"""The model of floating-point rounding that every op's error rule is written in (mnc/ir/ops) and
that verification allows for (mnc/verification/bounds.py).

Rounding errors are modelled as independent, zero-mean and of relative size u (2⁻²⁴ in float32),
the usual probabilistic model of rounding-error analysis (Higham & Mary, 2019); a comparison allows
TOLERANCE_SIGMAS standard deviations per element."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FP32_U = 2.0**-24
FP16_U = 2.0**-11
FP16_TINY = 2.0**-25  # half the smallest float16 subnormal: the rounding error near zero
TOLERANCE_SIGMAS = 8.0


@dataclass(frozen=True)
class Precision:
    """Unit roundoffs of one way of evaluating the network."""

    accumulate: float  # sums inside an op
    output: float  # every op's result
    weights: float  # stored weights (0: exact)


FLOAT32 = Precision(FP32_U, FP32_U, FP32_U)
EXACT_INPUTS_FLOAT32 = Precision(FP32_U, FP32_U, 0.0)  # one op in float32, its inputs and weights as given


def float16_rounded(x: np.ndarray) -> np.ndarray:
    """x rounded to the nearest float16 value (ties to even, overflow to ±inf), held in float32: what
    storing a float32 as float16 and reading it back gives, bit for bit, about five times faster than
    numpy's two conversions (its float32 → float16 cast is a scalar loop). The float32 bit pattern is
    rounded to float16's 10 fraction bits in integers; the few values outside float16's normal range
    (subnormal, overflowing, NaN) take numpy's conversion."""
    x = np.asarray(x)
    if x.dtype != np.float32:  # rounding a float64 to float32 first could round twice
        return x.astype(np.float16).astype(np.float32)
    if x.ndim == 0:  # numpy's operators give a 0-d array's results as scalars
        return float16_rounded(x.reshape(1)).reshape(())
    x = np.ascontiguousarray(x)
    bits = x.view(np.uint32)
    magnitude = bits & np.uint32(0x7FFFFFFF)
    rounded = (magnitude >> np.uint32(13)) & np.uint32(1)  # ties to even: + 0xFFF, or + 0x1000 if odd
    rounded += magnitude
    rounded += np.uint32(0xFFF)
    rounded &= np.uint32(0xFFFFE000)
    rounded |= bits & np.uint32(0x80000000)
    out = rounded.view(np.float32)
    # 0 < |x| < 2⁻¹⁴ (float16 subnormal), |x| ≥ 65520 (rounds to inf), inf and NaN
    special = (magnitude - np.uint32(1)) < np.uint32(0x387FFFFF)
    special |= magnitude >= np.uint32(0x477FF000)
    if special.any():
        out[special] = x[special].astype(np.float16).astype(np.float32)
    return out
