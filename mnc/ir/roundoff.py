"""The model of floating-point rounding that every op's error rule is written in (mnc/ir/ops) and
that verification allows for (mnc/verification/bounds.py).

Rounding errors are modelled as independent, zero-mean and of relative size u (2⁻²⁴ in float32),
the usual probabilistic model of rounding-error analysis (Higham & Mary, 2019); a comparison allows
TOLERANCE_SIGMAS standard deviations per element."""

from __future__ import annotations

from dataclasses import dataclass

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
