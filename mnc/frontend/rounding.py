"""Width rounding policies: how c·α becomes a channel count. A property of each spec."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WidthRounding:
    policy: str  # "truncate" | "make_divisible"
    value: int  # truncate: the minimum width; make_divisible: the divisor

    def __call__(self, channels: int, alpha: float) -> int:
        if self.policy == "truncate":
            # MobileNetV1 (TF-slim): depth = max(int(d * depth_multiplier), min_depth).
            return max(int(channels * alpha), self.value)
        return make_divisible(channels * alpha, self.value)


def make_divisible(v: float, divisor: int) -> int:
    """Nearest multiple of `divisor` (at least `divisor`) that loses no more than 10 % of v;
    the rule of the MobileNetV2/V3 reference implementations (TF-slim, torchvision)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


POLICIES = {"truncate": "min", "make_divisible": "divisor"}
