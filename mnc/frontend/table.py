"""Table rows → checked LayerRows: columns are the parameters of the row's block."""

from __future__ import annotations

import re

from mnc.errors import Collector, choices_hint, did_you_mean, one_of
from mnc.frontend.ast import CLASSES_SYMBOL, BlockDef, Cell, LayerRow, Row, Table, TapDef, TapRef
from mnc.frontend.blocks import default_value
from mnc.frontend.expressions import ACT_WORDS, FLAG_WORDS
from mnc.frontend.primitives import PRIMITIVES
from mnc.ir import activations

# Columns that are not block parameters.
SPECIAL_COLUMNS = {
    "input": "the row's input size as the paper prints it (224² × 3); checked at α = 1, ρ = 1",
    "operator": "the block, with an optional kernel (3x3) and modifiers",
    "n": "how many times the block repeats; only the first takes the stride",
    "from": "the tap(s) the row reads instead of the previous row's output",
    "tap": "a name for the row's output (or `layer as name` for one of its block's layers)",
}
IMAGE_TAP = "image"  # the network's input, readable as a tap
RESERVED_TAPS = (IMAGE_TAP, "input")
# What the common parameters mean, for messages.
PARAM_DOCS = {
    "t": "expansion factor",
    "c": "output channels before width scaling, or k for the number of classes",
    "s": "stride of the first block",
    "k": "kernel size",
    "exp": "expansion channels before width scaling",
    "se": "squeeze-and-excite, ✓ or -",
    "nl": f"activation: {activations.describe_words()}",
    "d": "dilation of the block's k×k convolution (atrous)",
}
# The papers' column names.
COLUMN_ALIASES = {"exp_size": "exp", "#out": "c", "out": "c"}
WIDTH_MODIFIERS = {
    "no_shrink": "keep channel counts for α < 1 and scale them for α > 1 (MobileNetV2's last 1×1 conv)",
    "fixed": "never width-scale channel counts",
}
MODIFIER_ALIASES = {"nbn": ("bn", False)}  # the MobileNetV3 paper's "NBN": no batch norm
# What people call the columns in prose, for suggestions.
COLUMN_SYNONYMS = {
    "stride": "s",
    "strides": "s",
    "channels": "c",
    "outputs": "c",
    "width": "c",
    "expansion": "t",
    "expand": "t",
    "repeat": "n",
    "repeats": "n",
    "op": "operator",
    "type": "operator",
    "layer": "operator",
    "block": "operator",
    "size": "input",
    "kernel": "k",
}


def column_name(cell: Cell) -> str:
    name = "_".join(a.text for a in cell.atoms).lower()
    return COLUMN_ALIASES.get(name, COLUMN_ALIASES.get(name.lstrip("#"), name.lstrip("#")))


def check_tables(tables: list[Table], blocks: dict[str, BlockDef], problems: Collector) -> list[LayerRow]:
    rows: list[LayerRow] = []
    unchecked: set[str] = set()  # taps of rows with errors
    known_params = {p.name for b in blocks.values() for p in b.params}
    for table in tables:
        columns = _check_header(table.header, known_params, problems)
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
            cells = dict(zip(columns, row.cells))
            layer = _check_row(len(rows), cells, blocks, problems, table.part)
            if layer is not None:
                rows.append(layer)
            elif "tap" in cells and cells["tap"].atoms:  # reported already: later rows may still read it
                unchecked.add(cells["tap"].atoms[-1].text)
    check_taps(rows, blocks, problems, unchecked)
    return rows


def check_taps(
    rows: list[LayerRow], blocks: dict[str, BlockDef], problems: Collector, unchecked: set[str] = frozenset()
) -> dict[str, TapDef]:
    """Every tap a row reads is defined by a row above it; tap names are unique. Returns the taps.
    `unchecked`: taps of rows that had errors of their own, not reported again where they are read."""
    taps: dict[str, TapDef] = {}

    def known(ref: TapRef) -> None:
        if ref.name not in taps and ref.name != IMAGE_TAP and ref.name not in unchecked:
            available = [IMAGE_TAP, *taps]
            later = (
                ""
                if ref.name not in {r.tap.name for r in rows if r.tap}
                else " (it is defined below; rows run in order)"
            )
            problems.error(
                f"no tap named '{ref.name}' above this row{later}"
                + choices_hint(ref.name, available, "taps here", ", ".join),
                ref.loc,
            )

    for row in rows:
        for ref in row.inputs:
            known(ref)
        for value in row.values.values():
            if isinstance(value, TapRef):
                known(value)
        block = blocks[row.block]
        if len(row.inputs) > 1 and not takes_several_inputs(block):
            problems.error(
                f"'{row.block}' reads one input, but the 'from' cell names {len(row.inputs)}; "
                "a block that joins its row's inputs uses concat() (the built-in block 'concat' does)",
                row.inputs[1].loc,
            )
        if len(row.inputs) > 1 and row.repeats > 1:
            problems.error(
                f"a row that joins several taps is one block; n = {row.repeats} would join them again",
                row.cell_locs["n"],
            )
        tap = row.tap
        if tap is None:
            continue
        if tap.layer is not None and row.repeats > 1:
            problems.error(
                f"'{tap.layer} as {tap.name}' names a layer of a row with n = {row.repeats} blocks; "
                "write that block on a row of its own",
                tap.loc,
            )
        if tap.name in RESERVED_TAPS:
            problems.error(f"'{tap.name}' is a reserved name; name the tap otherwise", tap.loc)
            continue
        if tap.name in taps:
            problems.error(
                f"tap '{tap.name}' is defined twice", tap.loc, notes=[("first defined here", taps[tap.name].loc)]
            )
        layers = [layer.name or layer.primitive for layer in block.layers]
        if tap.layer is not None and tap.layer not in layers:
            problems.error(
                f"'{row.block}' has no layer '{tap.layer}'" + choices_hint(tap.layer, layers, "its layers", ", ".join),
                tap.loc,
            )
        taps.setdefault(tap.name, tap)
    return taps


def takes_several_inputs(block: BlockDef) -> bool:
    """A block whose body joins all its row's inputs (`concat()` without arguments)."""
    return any(
        layer.primitive in PRIMITIVES and PRIMITIVES[layer.primitive].joins_row_inputs(layer) for layer in block.layers
    )


def _check_header(header: Row, known_params: set[str], problems: Collector) -> list[str] | None:
    columns: list[str] = []
    ok = True
    allowed = set(SPECIAL_COLUMNS) | known_params
    for cell in header.cells:
        name = column_name(cell)
        if not cell.atoms or any(a.kind not in ("NAME", "HASHNAME") for a in cell.atoms):
            problems.error("a header cell must name a column (a block parameter, or input, operator, n)", cell.loc)
            ok = False
        elif name not in allowed:
            problems.error(
                f"unknown column '{name}'" + choices_hint(name, allowed, "columns", synonyms=COLUMN_SYNONYMS),
                cell.loc,
            )
            ok = False
        elif name in columns:
            problems.error(f"column '{name}' appears twice", cell.loc)
            ok = False
        columns.append(name)
    if ok and "operator" not in columns:
        problems.error("a table needs an 'operator' column", header.loc)
        ok = False
    return columns if ok else None


def _check_row(index: int, cells: dict[str, Cell], blocks: dict[str, BlockDef], problems: Collector, part: str):
    before = len(problems.diagnostics)
    op_cell = cells["operator"]
    parsed = _operator(op_cell, blocks, problems)
    if parsed is None:
        return None
    block, kernel, kernel_loc, modifiers = parsed
    params = {p.name: p for p in block.params}
    values: dict = {}
    width = None
    if kernel is not None:
        if "k" not in params:
            problems.error(f"'{block.name}' takes no kernel size", kernel_loc)
        else:
            values["k"] = kernel
    for word, loc in modifiers.items():
        if word in WIDTH_MODIFIERS and any(p.type == "channels" for p in block.params):
            if width is not None:
                problems.error(f"'{width}' and '{word}' contradict each other; use one", loc)
            width = word
        elif word in MODIFIER_ALIASES and MODIFIER_ALIASES[word][0] in params:
            param, value = MODIFIER_ALIASES[word]
            values[param] = value
        elif word in params and params[word].type == "flag":
            values[word] = True
        else:
            accepted = sorted(
                [
                    *(WIDTH_MODIFIERS if any(p.type == "channels" for p in block.params) else ()),
                    *(p.name for p in block.params if p.type == "flag"),
                    *(a for a, (param, _) in MODIFIER_ALIASES.items() if param in params),
                ]
            )
            allowed = (
                f"; '{block.name}' accepts {one_of(accepted)}" if accepted else f"; '{block.name}' takes no modifiers"
            )
            problems.error(f"unknown modifier '{word}'" + did_you_mean(word, accepted) + allowed, loc)
    for column, cell in cells.items():
        if column in SPECIAL_COLUMNS:
            continue
        if column not in params:
            if not cell.is_empty:
                problems.error(
                    f"'{block.name}' has no parameter '{column}'; leave the cell empty or write '-'", cell.loc
                )
            continue
        if cell.is_empty:
            continue
        if column in values:
            problems.error(f"'{column}' is given twice: in the operator cell and in its column", cell.loc)
            continue
        value = _cell_value(column, params[column].type, cell, problems)
        if value is not None:
            values[column] = value
    for p in block.params:
        if p.name not in values and p.default is None:
            cell = cells.get(p.name)
            if cell is not None and not cell.is_empty:
                continue  # its value was wrong, and said so above
            where = cell.loc if cell is not None else op_cell.loc
            why = f"the table has no '{p.name}' column" if cell is None else f"its '{p.name}' cell is empty"
            if p.name == "k" and cell is None:
                why = f"no kernel size is given, e.g. '{block.name} 3x3'"
            doc = PARAM_DOCS.get(p.name)
            problems.error(
                f"'{block.name}' needs a value for '{p.name}'" + (f" ({doc})" if doc else "") + f", but {why}", where
            )
    repeats = 1
    if "n" in cells and not cells["n"].is_empty:
        repeats = _cell_value("n", "count", cells["n"], problems) or 1
    documented = None
    if "input" in cells and not cells["input"].is_empty:
        documented = _documented_shape(cells["input"], problems)
    inputs = _tap_refs(cells["from"], problems) if "from" in cells and not cells["from"].is_empty else ()
    tap = _tap_def(cells["tap"], problems) if "tap" in cells and not cells["tap"].is_empty else None
    if len(problems.diagnostics) != before:
        return None
    return LayerRow(
        index,
        block.name,
        values,
        width,
        repeats,
        documented,
        op_cell.loc,
        {c: cell.loc for c, cell in cells.items()},
        part,
        inputs,
        tap,
    )


def _tap_refs(cell: Cell, problems: Collector) -> tuple[TapRef, ...]:
    names = [a for a in cell.atoms if a.kind != "COMMA"]
    if any(a.kind != "NAME" for a in names):
        problems.error(f"the 'from' cell names taps separated by commas, got '{cell.text}'", cell.loc)
        return ()
    return tuple(TapRef(a.text, a.loc) for a in names)


def _tap_def(cell: Cell, problems: Collector) -> TapDef | None:
    words = [a.text for a in cell.atoms]
    if all(a.kind == "NAME" for a in cell.atoms) and (len(words) == 1 or (len(words) == 3 and words[1] == "as")):
        return TapDef(words[-1], words[0] if len(words) == 3 else None, cell.atoms[-1].loc)
    problems.error(f"a tap cell is a name, or `layer as name`, got '{cell.text}'", cell.loc)
    return None


def _operator(cell: Cell, blocks: dict[str, BlockDef], problems: Collector):
    atoms = [a for a in cell.atoms if a.kind != "COMMA"]
    if not atoms or atoms[0].kind != "NAME":
        problems.error(f"expected an operator ({one_of(blocks)})", cell.loc)
        return None
    name = atoms[0].text
    if name not in blocks:
        problems.error(
            f"unknown operator '{name}'" + choices_hint(name, blocks, "operators"),
            atoms[0].loc,
        )
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
    return blocks[name], kernel, kernel_loc, modifiers


def _cell_value(column: str, kind: str | None, cell: Cell, problems: Collector):
    atom = cell.atoms[0]
    if len(cell.atoms) > 1:
        problems.error(f"column '{column}' takes one value, got '{cell.text}'", cell.loc)
        return None
    doc = PARAM_DOCS.get(column) or SPECIAL_COLUMNS.get(column)
    what = f"column '{column}'" + (f" ({doc})" if doc else "")
    if kind == "flag":
        if atom.kind == "CHECK" or atom.text.lower() in FLAG_WORDS:
            return True if atom.kind == "CHECK" else FLAG_WORDS[atom.text.lower()]
        problems.error(f"{what} must be ✓, yes or no, got '{atom.text}'", atom.loc)
        return None
    if kind == "act":
        word = atom.text.lower()
        if atom.kind == "NAME" and word in ACT_WORDS:
            # `linear`/`none` is a value too (no activation), not an empty cell that takes the default.
            return activations.IDENTITY if ACT_WORDS[word] is None else ACT_WORDS[word]
        problems.error(
            f"{what} must be an activation ({activations.describe_words()}), got "
            f"'{atom.text}'" + did_you_mean(word, ACT_WORDS),
            atom.loc,
        )
        return None
    if kind in ("channels", "int") and atom.kind == "NAME" and atom.text == CLASSES_SYMBOL:
        return CLASSES_SYMBOL
    if kind == "tap":
        if atom.kind == "NAME":
            return TapRef(atom.text, atom.loc)
        problems.error(f"{what} must name a tap, got '{atom.text}'", atom.loc)
        return None
    if kind in (None, "float"):
        if atom.kind == "UNUMBER" and float(atom.text) > 0:
            return float(atom.text) if "." in atom.text or kind == "float" else int(atom.text)
        problems.error(f"{what} must be a number > 0, got '{atom.text}'", atom.loc)
        return None
    if atom.kind == "UNUMBER" and atom.text.isdigit() and int(atom.text) >= 1:
        return int(atom.text)
    extra = f" or '{CLASSES_SYMBOL}' (the number of classes)" if kind in ("channels", "int") else ""
    problems.error(f"{what} must be a whole number ≥ 1{extra}, got '{atom.text}'", atom.loc)
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


def row_arguments(row: LayerRow, block: BlockDef) -> dict:
    """The row's values plus the block's defaults (evaluated), before width scaling."""
    args = dict(row.values)
    for p in block.params:
        if p.name not in args:
            args[p.name] = default_value(p, args)
    return args
