"""Table rows → checked LayerRows: columns, cell values, operators and their modifiers."""
from __future__ import annotations

import re
from dataclasses import dataclass

from mnc.errors import Collector, Loc
from mnc.spec.ast import Cell, Row, Table
from mnc.spec.blocks import BLOCKS, REQUIRED
from mnc.spec.suggest import did_you_mean, one_of

COLUMNS = {
    "input": "the row's input size as the paper prints it (224² × 3); checked at α = 1, ρ = 1",
    "operator": "the block: " + ", ".join(BLOCKS) + ", with an optional kernel (3x3) and modifiers",
    "t": "expansion factor",
    "c": "output channels before width scaling, or k for the number of classes",
    "n": "how many times the block repeats; only the first takes the stride",
    "s": "stride of the first block",
}
CLASSES_SYMBOL = "k"
# What people call the columns in prose, for suggestions.
COLUMN_SYNONYMS = {
    "stride": "s", "strides": "s", "channels": "c", "out": "c", "outputs": "c", "width": "c",
    "expansion": "t", "expand": "t", "repeat": "n", "repeats": "n", "op": "operator", "type": "operator",
    "layer": "operator", "block": "operator", "size": "input",
}


@dataclass(frozen=True)
class LayerRow:
    index: int  # position among all table rows of the spec: the "stage" in node names
    block: str
    kernel: int | None
    modifiers: frozenset[str]
    values: dict  # column → value; c may be CLASSES_SYMBOL
    repeats: int
    documented_input: tuple | None  # (H, W, C) as written in the input column; entries may be "k"
    loc: Loc  # the operator cell
    cell_locs: dict  # column → Loc


def check_tables(tables: list[Table], problems: Collector) -> list[LayerRow]:
    rows: list[LayerRow] = []
    for table in tables:
        columns = _check_header(table.header, problems)
        if columns is None:
            continue
        for row in table.rows:
            if len(row.cells) != len(columns):
                problems.error(
                    f"row has {len(row.cells)} cells but the table header has {len(columns)} columns "
                    f"({', '.join(columns)})",
                    row.cells[len(columns)].loc if len(row.cells) > len(columns) else row.cells[-1].loc,
                    notes=[("header is here", table.header.loc)],
                )
                continue
            layer = _check_row(len(rows), dict(zip(columns, row.cells)), problems)
            if layer is not None:
                rows.append(layer)
    if not rows and not problems.diagnostics:
        problems.error("the spec has no layers; add a table whose header names the columns, e.g. "
                       "| operator | c | n | s |")
    return rows


def _check_header(header: Row, problems: Collector) -> list[str] | None:
    columns: list[str] = []
    ok = True
    for cell in header.cells:
        name = "_".join(a.text for a in cell.atoms).lower()
        if not cell.atoms or any(a.kind != "NAME" for a in cell.atoms):
            problems.error(f"a header cell must name a column ({one_of(COLUMNS)})", cell.loc)
            ok = False
        elif name not in COLUMNS:
            problems.error(f"unknown column '{name}'" + did_you_mean(name, COLUMNS, COLUMN_SYNONYMS)
                           + f"; columns are {one_of(COLUMNS)}", cell.loc)
            ok = False
        elif name in columns:
            problems.error(f"column '{name}' appears twice", cell.loc)
            ok = False
        columns.append(name)
    if ok and "operator" not in columns:
        problems.error("a table needs an 'operator' column", header.loc)
        ok = False
    return columns if ok else None


def _check_row(index: int, cells: dict[str, Cell], problems: Collector) -> LayerRow | None:
    before = len(problems.diagnostics)
    op_cell = cells["operator"]
    parsed = _operator(op_cell, problems)
    if parsed is None:
        return None
    block_name, kernel, kernel_loc, modifiers = parsed
    block = BLOCKS[block_name]
    if block.kernel is None and kernel is not None:
        problems.error(f"'{block_name}' takes no kernel size" + (
            "; write 'avgpool global' (pooling with a fixed window is not supported)" if block_name == "avgpool" else ""),
            kernel_loc)
    elif block.kernel is REQUIRED and kernel is None:
        problems.error(f"'{block_name}' needs a kernel size, e.g. '{block_name} 3x3'", op_cell.loc)
    kernel = kernel if kernel is not None else (block.kernel if isinstance(block.kernel, int) else None)
    for word, loc in modifiers.items():
        if word not in block.modifiers:
            allowed = f"; '{block_name}' accepts {one_of(block.modifiers)}" if block.modifiers else \
                f"; '{block_name}' takes no modifiers"
            problems.error(f"unknown modifier '{word}'" + did_you_mean(word, block.modifiers) + allowed, loc)
    if "no_shrink" in modifiers and "fixed" in modifiers:
        problems.error("'no_shrink' and 'fixed' contradict each other; use one", modifiers["fixed"])
    if block_name == "avgpool" and "global" not in modifiers:
        problems.error("write 'avgpool global': global average pooling is the only pooling supported", op_cell.loc)

    values: dict = {}
    for column, default in block.columns.items():
        cell = cells.get(column)
        if cell is None or cell.is_empty:
            if default is REQUIRED:
                where = cell.loc if cell is not None else op_cell.loc
                why = f"the table has no '{column}' column" if cell is None else f"its '{column}' cell is empty"
                problems.error(f"'{block_name}' needs a value for '{column}' ({COLUMNS[column]}), but {why}", where)
            else:
                values[column] = default
            continue
        value = _cell_value(column, cell, problems)
        if value is not None:
            values[column] = value
    for column, cell in cells.items():
        if column in ("operator", "input", "n") or column in block.columns or cell.is_empty:
            continue
        problems.error(f"'{block_name}' does not use column '{column}'; leave the cell empty or write '-'", cell.loc)
    repeats = 1
    if "n" in cells and not cells["n"].is_empty:
        repeats = _cell_value("n", cells["n"], problems) or 1
    documented = None
    if "input" in cells and not cells["input"].is_empty:
        documented = _documented_shape(cells["input"], problems)
    if len(problems.diagnostics) != before:
        return None
    return LayerRow(index, block_name, kernel, frozenset(modifiers), values, repeats, documented, op_cell.loc,
                    {c: cell.loc for c, cell in cells.items()})


def _operator(cell: Cell, problems: Collector):
    atoms = [a for a in cell.atoms if a.kind != "COMMA"]
    if not atoms or atoms[0].kind != "NAME":
        problems.error(f"expected an operator ({one_of(BLOCKS)})", cell.loc)
        return None
    name = atoms[0].text.lower()
    if name not in BLOCKS:
        problems.error(f"unknown operator '{atoms[0].text}'" + did_you_mean(name, BLOCKS)
                       + f"; operators are {one_of(BLOCKS)}", atoms[0].loc)
        return None
    kernel = kernel_loc = None
    modifiers: dict = {}
    for atom in atoms[1:]:
        if atom.kind == "DIMS" and kernel is None:
            sizes = _dims(atom.text)
            if len(sizes) != 2 or not all(isinstance(s, int) for s in sizes):
                problems.error(f"expected a kernel size such as 3x3, got '{atom.text}'", atom.loc)
            elif sizes[0] != sizes[1]:
                problems.error(f"kernel {atom.text} is not square; only k×k kernels are supported", atom.loc)
            elif sizes[0] < 1 or sizes[0] % 2 == 0:
                problems.error(f"kernel size must be odd (1x1, 3x3, 5x5, ...), got {atom.text}", atom.loc)
            else:
                kernel, kernel_loc = sizes[0], atom.loc
        elif atom.kind == "NAME":
            modifiers[atom.text.lower()] = atom.loc
        else:
            problems.error(f"unexpected '{atom.text}' in the operator cell", atom.loc)
    return name, kernel, kernel_loc, modifiers


def _cell_value(column: str, cell: Cell, problems: Collector):
    atom = cell.atoms[0]
    if len(cell.atoms) > 1:
        problems.error(f"column '{column}' takes one value, got '{cell.text}'", cell.loc)
        return None
    if column == "c" and atom.kind == "NAME" and atom.text == CLASSES_SYMBOL:
        return CLASSES_SYMBOL
    if column == "t":
        if atom.kind == "UNUMBER" and float(atom.text) > 0:
            return float(atom.text)
        problems.error(f"expansion factor 't' must be a number > 0, got '{atom.text}'", atom.loc)
        return None
    if atom.kind == "UNUMBER" and atom.text.isdigit() and int(atom.text) >= 1:
        return int(atom.text)
    extra = f" or '{CLASSES_SYMBOL}' (the number of classes)" if column == "c" else ""
    problems.error(f"column '{column}' ({COLUMNS[column]}) must be a whole number ≥ 1{extra}, got '{atom.text}'",
                   atom.loc)
    return None


_SQUARE = re.compile(r"^\s*(\d+)\s*(²|\^2)")


def _dims(text: str) -> list:
    """'224² × 3' → [224, 224, 3]; '1 x 1 x k' → [1, 1, 'k']; '3x3' → [3, 3]."""
    parts = [p.strip() for p in re.split(r"[x×]", re.sub(r"(²|\^2)", "", text))]
    values = [int(p) if p.isdigit() else p for p in parts]
    if _SQUARE.match(text):
        values.insert(0, values[0])
    return values


def _documented_shape(cell: Cell, problems: Collector):
    if len(cell.atoms) != 1 or cell.atoms[0].kind != "DIMS":
        problems.error(f"expected an input size such as 112² × 32 or 112 x 112 x 32, got '{cell.text}'", cell.loc)
        return None
    dims = _dims(cell.atoms[0].text)
    if len(dims) != 3 or any(isinstance(d, str) and d != CLASSES_SYMBOL for d in dims):
        problems.error(f"expected height × width × channels, got '{cell.text}'", cell.loc)
        return None
    return tuple(dims)
