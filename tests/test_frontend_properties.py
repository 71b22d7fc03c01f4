"""Property tests of the front end: specs generated from the grammar's pieces and mutated from the
bundled ones must end in a summary (exit 0) or a located error (exit 2) — never a traceback, a hang or
a MemoryError. Hypothesis runs derandomised, so the suite is deterministic."""

import re
import time
from pathlib import Path

from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnc.cli import main

SPECS = sorted((ROOT / "specs").glob("*.mnet")) + sorted((ROOT / "examples" / "specs").glob("*.mnet"))
TEXTS = [p.read_text() for p in SPECS]
# Words and values a spec is made of, and values that break things: what mutations draw from.
WORDS = [
    "conv2d",
    "bottleneck",
    "bneck",
    "dwsep",
    "avgpool",
    "global",
    "fc",
    "softmax",
    "se",
    "nl",
    "RE",
    "HS",
    "relu6",
    "hswish",
    "k",
    "c",
    "t",
    "n",
    "s",
    "exp",
    "no_shrink",
    "fixed",
    "nbn",
    "✓",
    "-",
    "3x3",
    "5x5",
    "block",
    "end",
    "conv",
    "act",
    "pool",
    "add",
    "input",
    "if",
    "make_divisible",
    "truncate",
    "min",
    "divisor",
]
VALUES = [
    "0",
    "-1",
    "1",
    "2",
    "7",
    "1.5",
    "1e9",
    "1e999",
    "100000000",
    "4294967296",
    "0.0001",
    "nan",
    "inf",
    "",
    "k",
    "-",
    "224² × 3",
    "1 x 1 x k",
    "(",
    ")",
    "=",
    "|",
    "#",
    "\t",
    "\u00a0",
    "²",
]
PATH = "generated.mnet"
# An error at a place in the spec (or in the built-in block it uses, with a note at the use), or the file.
LOCATED = re.compile(r"^(\S+:\d+:\d+|generated\.mnet): error: ")
TIME_BUDGET_S = 20


@st.composite
def mutated_spec(draw) -> str:
    lines = draw(st.sampled_from(TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["replace_token", "delete_line", "duplicate_line", "insert", "swap_cells"]))
        if kind == "delete_line":
            del lines[i]
        elif kind == "duplicate_line":
            lines.insert(i, lines[i])
        elif kind == "insert":
            lines.insert(
                i,
                draw(
                    st.sampled_from(
                        [
                            "| operator | c | n | s |",
                            "|---|---|",
                            "alpha = 2",
                            "block b(c: channels)",
                            "end",
                            "    conv(3, c)",
                            "x = 1",
                        ]
                    )
                ),
            )
        elif kind == "swap_cells" and lines[i].startswith("|"):
            cells = lines[i].split("|")
            draw(st.randoms(use_true_random=False)).shuffle(cells)
            lines[i] = "|".join(cells)
        else:
            tokens = re.split(r"(\s+|\|)", lines[i])
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[j] = draw(st.sampled_from(WORDS + VALUES))
            lines[i] = "".join(tokens)
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


def _pick(draw, valid: list[str], invalid: list[str]) -> str:
    """Mostly a valid value, one time in eight an invalid one: whole specs are then often valid."""
    return draw(st.sampled_from(invalid if draw(st.integers(0, 7)) == 0 else valid))


ROWS = {  # operator → valid (t, c, n, s) choices
    "conv2d 3x3": (["-"], ["8", "16", "32"], ["1"], ["1", "2"]),
    "conv2d 1x1, nbn": (["-"], ["8", "16"], ["1"], ["1"]),
    "bottleneck": (["1", "6"], ["8", "16", "24"], ["1", "2", "3"], ["1", "2"]),
    "dwsep": (["-"], ["16", "32"], ["1", "2"], ["1", "2"]),
    "avgpool global": (["-"], ["-"], ["-"], ["-"]),
    "fc": (["-"], ["k"], ["-"], ["-"]),
    "softmax": (["-"], ["-"], ["-"], ["-"]),
}
BAD_CELLS = ["0", "-", "1000", "100000000", "x", "k", "2.5", ""]


@st.composite
def generated_spec(draw) -> str:
    """A spec put together from the language's pieces: settings and rows, mostly valid."""
    settings_lines = [
        "name = g",
        f"input_channels = {_pick(draw, ['3', '1'], ['0', '-2', 'x'])}",
        f"base_resolution = {_pick(draw, ['32', '64', '96'], ['1', '100000', '0'])}",
        f"classes = {_pick(draw, ['10', '1000'], ['0', '-1'])}",
        f"activation = {_pick(draw, ['relu', 'relu6', 'hswish', 'sigmoid'], ['tanh', ''])}",
        f"width_rounding = {_pick(draw, ['make_divisible(divisor=8)', 'truncate(min=8)'], ['round(2)', '8'])}",
        f"padding = {_pick(draw, ['same', 'symmetric'], ['valid'])}",
        f"alpha = {_pick(draw, ['1.0', '0.5', '0.25', '1.4'], ['0', '-1', '100'])}",
    ]
    rows = []
    for op in draw(st.lists(st.sampled_from(list(ROWS)), min_size=0, max_size=8)):
        cells = [_pick(draw, choices, BAD_CELLS) for choices in ROWS[op]]
        rows.append(f"| {op} | {' | '.join(cells)} |")
    table = ["| operator | t | c | n | s |", "|---|---|---|---|---|", *rows]
    return "\n".join([*settings_lines, "", *table]) + "\n"


def _summary_of(text: str, tmp_path: Path, capsys) -> None:
    spec = tmp_path / PATH
    spec.write_text(text, encoding="utf-8")
    start = time.monotonic()
    code = main(["summary", str(spec), "--max-memory", "4G"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err.replace(str(tmp_path) + "/", "")
    assert code in (0, 2), f"exit {code}:\n{err}\n--- spec ---\n{text}"
    assert "Traceback" not in err
    if code == 2:
        assert LOCATED.search(err), f"an error without a place:\n{err}\n--- spec ---\n{text}"
    assert elapsed < TIME_BUDGET_S, f"{elapsed:.1f} s for:\n{text}"


FAST = settings(
    max_examples=600,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FAST
@given(text=mutated_spec())
def test_mutated_specs_end_in_a_summary_or_a_located_error(tmp_path, capsys, text):
    _summary_of(text, tmp_path, capsys)


@FAST
@given(text=generated_spec())
def test_generated_specs_end_in_a_summary_or_a_located_error(tmp_path, capsys, text):
    _summary_of(text, tmp_path, capsys)
