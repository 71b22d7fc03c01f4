"""Every constant of a written artifact against the value it must have, exactly. Outputs alone cannot
see a corruption smaller than the tolerance (fp16 rounding, a small scale on a few weights); the
constants can: each one must equal what the declared rounding or quantisation of the IR gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnc.artifact import ArtifactRecord
from mnc.backends.target import Target
from mnc.ir.graph import Graph

SHOWN = 5


@dataclass
class ConstantsCheck:
    checked: int
    mismatches: list[tuple[str, str]] = field(default_factory=list)  # (constant, what is wrong)
    folded: int = 0  # quantisation parameters the runtime's optimiser folded into a kernel or shared

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict:
        return {
            "checked": self.checked - self.folded,
            **({"folded_by_the_runtime": self.folded} if self.folded else {}),
            "mismatched": len(self.mismatches),
            "first_mismatches": [{"constant": n, "problem": p} for n, p in self.mismatches[:SHOWN]],
            "rule": "equal, bit for bit, to the IR's values after the target's declared rounding/quantisation",
            "verdict": "pass" if self.passed else "fail",
        }

    def reason(self) -> str:
        name, problem = self.mismatches[0]
        more = f" (and {len(self.mismatches) - 1} more constants)" if len(self.mismatches) > 1 else ""
        return f": constant '{name}' {problem}{more}"


def check_constants(target: Target, artifact: Path, emitted: Graph, record: ArtifactRecord) -> ConstantsCheck | None:
    """None where the target declares no constants to check."""
    expected = target.expected_constants(emitted, record)
    if not expected:
        return None
    actual = target.constants(artifact)
    check = ConstantsCheck(len(expected))
    for name, want in expected.items():
        got = actual.get(name)
        if got is None and name.endswith(target.foldable_constants):
            check.folded += 1
        elif got is None:
            check.mismatches.append((name, "is missing from the artifact"))
        elif got.dtype != want.dtype or got.shape != want.shape:
            check.mismatches.append((name, f"is {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}"))
        elif not np.array_equal(got, want):
            differ = got != want
            largest = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
            check.mismatches.append(
                (
                    name,
                    f"differs from the spec's weights in {int(differ.sum()):,} of {want.size:,} values "
                    f"(largest difference {largest:.3g})",
                )
            )
    return check
