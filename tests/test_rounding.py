"""Width rounding, checked against values the reference implementations are known to produce."""

import pytest

from mnc.frontend.rounding import WidthRounding, make_divisible


@pytest.mark.parametrize(
    "v,expected",
    [
        (32 * 0.35, 16),  # torchvision α = 0.35 stem: the nearest multiple, 8, would lose 29 % (> 10 %)
        (16 * 0.35, 8),  # never below the divisor
        (24 * 0.5, 16),  # 12 rounds half up to 16
        (320 * 0.35, 112),
        (1280 * 1.4, 1792),
        (96 * 0.75, 72),
        (20.0, 24),  # halfway rounds up
        (36.0, 40),
        (35.0, 32),  # nearest multiple 32 loses 8.6 %: kept
        (35.9, 40),  # nearest multiple 32 would lose 10.9 %: one divisor more
    ],
)
def test_make_divisible(v, expected):
    assert make_divisible(v, 8) == expected


@pytest.mark.parametrize(
    "c,alpha,expected",
    [
        (32, 0.25, 8),
        (64, 0.25, 16),
        (1024, 0.75, 768),
        (32, 0.1, 8),
        (100, 0.33, 33),
    ],
)
def test_truncate_like_tf_slim_v1(c, alpha, expected):
    assert WidthRounding("truncate", 8)(c, alpha) == expected
