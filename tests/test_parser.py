"""Golden tests of the surface syntax: what the parser makes of each construct."""

from mnc.frontend.parser import parse_text


def test_settings_with_numbers_names_strings_calls_and_lists():
    spec = parse_text(
        "name = net  # trailing comment\n"
        'description = "a \\"quoted\\" net"\n'
        "alpha = 0.75\n"
        "classes = 10\n"
        "width_rounding = truncate(min=8)\n"
        "mean = 0.5, 0.25, -1e-2\n"
    )
    got = {s.key: [v.describe() for v in s.values] for s in spec.settings}
    assert got == {
        "name": ["net"],
        "description": ['a "quoted" net'],
        "alpha": ["0.75"],
        "classes": ["10"],
        "width_rounding": ["truncate(min=8)"],
        "mean": ["0.5", "0.25", "-0.01"],
    }
    classes = spec.settings[3].values[0]
    assert classes.kind == "number" and isinstance(classes.value, int)
    assert spec.tables == []


def test_markdown_table_with_paper_notation():
    spec = parse_text(
        "# a comment line\n"
        "\n"
        "| input     | operator             | c    |\n"
        "|:----------|:--------------------:|-----:|\n"
        "| 224² × 3  | conv2d 3x3           | 32   |\n"
        "# comments and blank lines inside a table are fine\n"
        "\n"
        "| 7^2 x 320 | conv2d 1x1, no_shrink | 1280 |\n"
        "| 1 × 1 × k | fc                   | -    |\n"
        "|           | softmax              |      |\n"
    )
    (table,) = spec.tables
    assert [c.text for c in table.header.cells] == ["input", "operator", "c"]
    rows = [[c.text for c in row.cells] for row in table.rows]
    assert rows == [
        ["224² × 3", "conv2d 3x3", "32"],
        ["7^2 x 320", "conv2d 1x1 , no_shrink", "1280"],
        ["1 × 1 × k", "fc", "-"],
        ["", "softmax", ""],
    ]
    kinds = [a.kind for a in table.rows[1].cells[1].atoms]
    assert kinds == ["NAME", "DIMS", "COMMA", "NAME"]
    assert table.rows[2].cells[2].is_empty and table.rows[3].cells[0].is_empty


def test_positions_are_one_based_lines_and_columns():
    spec = parse_text("name = a\n\n| operator | c |\n|---|---|\n|  fc | 10 |\n", "p.mnet")
    cell = spec.tables[0].rows[0].cells[1]
    assert (cell.loc.path, cell.loc.line, cell.loc.col) == ("p.mnet", 5, 9)
    assert spec.settings[0].values[0].loc.col == 8


def test_a_setting_ends_a_table_and_a_new_header_starts_one():
    spec = parse_text("| operator | c |\n|---|---|\n| fc | 10 |\nalpha = 1.0\n| operator |\n|---|\n| softmax |\n")
    assert [len(t.rows) for t in spec.tables] == [1, 1]
    assert [c.text for c in spec.tables[1].header.cells] == ["operator"]


def test_file_without_trailing_newline_and_crlf_line_endings():
    spec = parse_text("name = a\r\nalpha = 2")
    assert [s.key for s in spec.settings] == ["name", "alpha"]
