"""Values that go into an artifact must not depend on the machine. Batch-norm statistics of seeded
weights and int8 activation ranges come from forward passes whose matrix products BLAS sums in an
order that depends on the CPU's kernel (AVX2, AVX-512) and thread count. mnc runs those passes in
float64, where such differences stay near 1e-15 relative, and keeps 16 significant bits of their
results: a difference that small moves a value across a 16-bit rounding boundary about once in
10¹⁰ values, so the same spec gives the same bytes on every machine."""

from __future__ import annotations

import numpy as np

SIGNIFICANT_BITS = 16


def stable(x, bits: int = SIGNIFICANT_BITS) -> np.ndarray:
    """x rounded to `bits` significant bits (ties to even), as float64."""
    mantissa, exponent = np.frexp(np.asarray(x, dtype=np.float64))
    return np.ldexp(np.round(np.ldexp(mantissa, bits)), exponent - bits)
