"""Every way a spec can be wrong gets a located message. Each case changes one line of a
valid spec and names the line, column and message the user must see."""

import pytest
from conftest import TINY, replace_line, spec_errors

from mnc.cli.parser import WORDING
from mnc.errors import InputError, wording
from mnc.frontend import build_graph, load_spec_text

CASES = [
    # (line to replace, new text, expected line, column, message fragment)
    (5, "activaton = relu6", 5, 1, "unknown setting 'activaton'; did you mean 'activation'?"),
    (5, "activation = relu7", 5, 14, "'relu6', 'sigmoid', 'silu', got 'relu7'; did you mean"),
    (
        6,
        "width_rounding = make_divisble(8)",
        6,
        18,
        "unknown width rounding policy 'make_divisble'; did you mean 'make_divisible'?",
    ),
    (6, "width_rounding = truncate(divisor=8)", 6, 18, "'truncate' takes one argument, min=N"),
    (6, "width_rounding = 8", 6, 18, "'width_rounding' must be a policy call"),
    (4, "classes = 10.5", 4, 11, "'classes' must be a whole number, got '10.5'"),
    (4, "classes = 0", 4, 11, "'classes' must be at least 1, got 0"),
    (8, "alpha = 0", 8, 9, "width multiplier α must be > 0, got 0"),
    (8, "alpha = -0.5", 8, 9, "width multiplier α must be > 0, got -0.5"),
    (8, "alpha = 50", 8, 9, "width multiplier α = 50 is too large"),
    (8, "rho = 0.001", 8, 7, "ρ = 0.001 gives resolution round(32·0.001) = 0: the input must be at least 1×1"),
    (8, "mean = 0.5, 0.5", 8, 8, "'mean' has 2 values but the input has 3 channels"),
    (8, "std = 0.5, 0, 0.5", 8, 7, "'std' values must be > 0; value 2 is 0.0"),
    (8, "frobnicate = 3", 8, 1, "unknown setting 'frobnicate'"),
    (8, "batchnorm_eps = 0", 8, 17, "'batchnorm_eps' must be > 0, got 0"),
    (
        9,
        "| operator       | t | c  | n | zzz |",
        9,
        33,
        "unknown column 'zzz'; columns are 'bn', 'c', 'd', 'exp', 'from'",
    ),
    (9, "| operator       | t | c  | n | stride |", 9, 33, "unknown column 'stride'; did you mean 's'?"),
    (9, "| operator       | t | c  | n | c |", 9, 33, "column 'c' appears twice"),
    (11, "| conv2d 3x3     | - | 16 | 1 |", 11, 29, "row has 4 cells but the table header has 5 columns"),
    (11, "| conv2d 3x3     | - | 16 | 1 | 2 | 7 |", 11, 37, "row has 6 cells but the table header has 5 columns"),
    (12, "| bottlenek      | 6 | 24 | 2 | 2 |", 12, 3, "unknown operator 'bottlenek'; did you mean 'bottleneck'?"),
    (
        12,
        "| bottleneck     |   | 24 | 2 | 2 |",
        12,
        19,
        "'bottleneck' needs a value for 't' (expansion factor), but its 't' cell is empty",
    ),
    (
        12,
        "| bottleneck     | 6 | 2.5 | 2 | 2 |",
        12,
        24,
        "column 'c' (output channels before width scaling, or k for the number of classes) must be a whole number ≥ 1",
    ),
    (
        12,
        "| bottleneck     | 6 | 24 | 0 | 2 |",
        12,
        29,
        "column 'n' (how many times the block repeats; only the first takes the stride) must be a whole number ≥ 1, got '0'",
    ),
    (12, "| bottleneck 4x4 | 6 | 24 | 2 | 2 |", 12, 14, "kernel size must be odd"),
    (12, "| bottleneck 3x5 | 6 | 24 | 2 | 2 |", 12, 14, "kernel 3x5 is not square"),
    (12, "| bottleneck, no_shrnk | 6 | 24 | 2 | 2 |", 12, 15, "unknown modifier 'no_shrnk'; did you mean 'no_shrink'?"),
    (
        11,
        "| conv2d         | - | 16 | 1 | 2 |",
        11,
        3,
        "'conv2d' needs a value for 'k' (kernel size), but no kernel size is given, e.g. 'conv2d 3x3'",
    ),
    (
        11,
        "| conv2d 3x3     | 6 | 16 | 1 | 2 |",
        11,
        20,
        "'conv2d' has no parameter 't'; leave the cell empty or write '-'",
    ),
    (13, "| avgpool 7x7    |   |    |   |   |", 13, 11, "'avgpool' takes no kernel size"),
    (10, "| fc | k |", 9, 1, "table row outside a table"),  # the header lost its rule line
]


@pytest.mark.parametrize("line,new,at_line,at_col,message", CASES, ids=[c[4][:40] for c in CASES])
def test_bad_spec_is_reported_at_its_location(line, new, at_line, at_col, message):
    diagnostics = spec_errors(replace_line(TINY, line, new))
    located = [(d.loc.line, d.loc.col, d.message) for d in diagnostics if d.loc]
    assert any(ln == at_line and col == at_col and message in text for ln, col, text in located), located


def test_missing_required_setting_is_named():
    text = "\n".join(line for line in TINY.splitlines() if not line.startswith("classes")) + "\n"
    (d,) = spec_errors(text)
    assert "missing required setting 'classes'" in d.message and (d.loc.line, d.loc.col) == (1, 1)


def test_duplicate_setting_points_at_both_definitions():
    (d,) = spec_errors(replace_line(TINY, 8, "activation = relu"))
    assert d.message == "'activation' is set twice" and d.loc.line == 8
    assert d.notes[0][0] == "first set here" and d.notes[0][1].line == 5


def test_rho_and_resolution_together():
    text = replace_line(TINY, 8, "rho = 1.0\nresolution = 64")
    (d,) = spec_errors(text)
    assert d.message == "set either 'rho' or 'resolution', not both" and d.loc.line == 9


@pytest.mark.parametrize(
    "text,line,col,message",
    [
        ("alpha 1.0\n", 1, 7, "expected '='"),
        ("alpha = 1.0 $\n", 1, 13, "unexpected character '$'"),
        ("alpha =\n", 1, 8, "unexpected end of line"),
        ("| operator | c \n", 1, 16, "unexpected end of line"),
        ("width_rounding = truncate(min=8\n", 1, 32, "expected"),
    ],
)
def test_syntax_errors_are_located(text, line, col, message):
    (d,) = spec_errors(text)
    assert (d.loc.line, d.loc.col) == (line, col) and message in d.message, (d.loc, d.message)


def test_all_independent_errors_are_reported_in_one_run():
    text = replace_line(TINY, 5, "activaton = relu6")
    text = replace_line(text, 12, "| bottlenek      | 6 | 24 | 2 | 2 |")
    text = replace_line(text, 14, "| fc             |   | kk |   |   |")
    diagnostics = spec_errors(text)
    lines = sorted(d.loc.line for d in diagnostics if d.loc)
    assert lines == [5, 12, 14]
    assert "3 errors" in InputError(diagnostics).render()


def test_rendered_error_has_path_line_col_source_and_caret():
    text = replace_line(TINY, 12, "| bottlenek      | 6 | 24 | 2 | 2 |")
    with pytest.raises(InputError) as info:
        load_spec_text(text, "specs/bad.mnet")
    assert info.value.render().splitlines() == [
        "specs/bad.mnet:12:3: error: unknown operator 'bottlenek'; did you mean 'bottleneck'?; "
        "operators are 'avgpool', 'bneck', 'bottleneck', 'concat', 'conv2d', 'dwsep', 'fc', 'softmax', 'upsample'",
        "  | bottlenek      | 6 | 24 | 2 | 2 |",
        "    ^~~~~~~~~",
    ]


def test_documented_input_size_is_checked_at_alpha_1():
    table = (
        "| input    | operator       | t | c  | n | s |\n"
        "|----------|----------------|---|----|---|---|\n"
        "| 32² × 3  | conv2d 3x3     | - | 16 | 1 | 2 |\n"
        "| 16² × 16 | bottleneck     | 6 | 24 | 2 | 2 |\n"
        "| 4² × 24  | avgpool global |   |    |   |   |\n"  # wrong: 16 / 2 = 8
        "| 1² × 24  | fc             |   | k  |   |   |\n"
    )
    text = TINY[: TINY.index("| operator")] + table
    (d,) = spec_errors(text)
    assert (d.loc.line, d.loc.col) == (13, 3)
    assert "the input column says 4 × 4 × 24 but the rows above produce 8 × 8 × 24 at α = 1" in d.message
    # The check uses α = 1 and the base resolution whatever the compile asks for.
    good = text.replace("| 4² × 24 ", "| 8² × 24 ")
    spec = load_spec_text(good)
    assert build_graph(spec, spec.config(alpha=0.5, resolution=64)).node("stage2.block0.pool").shape == (16, 1, 1)


def test_resolution_that_collapses_a_feature_map_points_at_the_stride():
    spec = load_spec_text(TINY, "tiny.mnet")
    with pytest.raises(InputError) as info:
        build_graph(spec, spec.config(resolution=2))
    (d,) = info.value.diagnostics
    assert "stride-2 layer receives a 1×1 map; resolution 2 is too small" in d.message
    assert (d.loc.line, d.loc.col) == (12, 33)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"alpha": 0.0}, "--alpha 0: width multiplier α must be > 0"),
        ({"alpha": 12.0}, "--alpha 12: width multiplier α = 12 is too large"),
        ({"rho": 0.0}, "--rho 0: resolution multiplier ρ must be > 0"),
        ({"rho": 0.01}, "--rho 0.01: ρ = 0.01 gives resolution round(32·0.01) = 0"),
        ({"resolution": 0}, "--resolution 0: resolution 0: the input must be at least 1×1"),
        ({"resolution": 10**5}, "is too large"),
        ({"classes": 0}, "--classes 0: the number of classes must be at least 1"),
    ],
)
def test_bad_overrides_name_the_option(kwargs, message):
    """As the command line's flag under its wording, as the keyword argument from Python."""
    spec = load_spec_text(TINY)
    with wording(WORDING), pytest.raises(InputError) as info:
        spec.config(**kwargs)
    assert message in info.value.render()
    with pytest.raises(InputError) as info:
        spec.config(**kwargs)
    name = next(iter(kwargs))
    python = message.replace(f"--{name} ", f"{name}=") if message.startswith("--") else message
    assert python in info.value.render() and "--" not in info.value.render()
