"""Spec text → syntax tree (mnc.frontend.ast), with a source position on everything."""

from __future__ import annotations

import functools
from pathlib import Path

import lark

from mnc.errors import Collector, InputError, Loc, register_source
from mnc.frontend.ast import (
    Argument,
    Atom,
    BlockDef,
    Cell,
    Expr,
    Layer,
    Param,
    PartDecl,
    Row,
    Setting,
    Spec,
    Table,
    Value,
)

# Human names for the grammar's terminals, used in "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "EQUAL": "'='",
    "SIGNED_NUMBER": "a number",
    "UNUMBER": "a number",
    "ESCAPED_STRING": "a string",
    "DIMS": "a size such as 3x3 or 112² × 32",
    "DASH": "'-'",
    "COMMA": "','",
    "BAR": "'|'",
    "LPAR": "'('",
    "RPAR": "')'",
    "RULE": "a table rule such as |---|---|",
    "CHECK": "'✓'",
    "HASHNAME": "a column name such as #out",
    "COMPARE": "a comparison",
    "ADDOP": "'+' or '-'",
    "MULOP": "'*', '/' or '//'",
    "COLON": "':'",
    "MINUS": "'-'",
    "BLOCK": "'block'",
    "END": "'end'",
    "IF": "'if'",
    "PART": "'part'",
    "_NL": "end of line",
    "$END": "end of file",
}


def _grammar_path() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "grammar" / "mnet.lark"
    if packaged.exists():  # installed wheel: the build copies grammar/ into the package
        return packaged
    return Path(__file__).resolve().parents[2] / "grammar" / "mnet.lark"  # source checkout


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    # cache=True: Lark keeps the built LALR tables in a temporary file, keyed by the grammar's
    # hash, so a process start does not rebuild them.
    return lark.Lark(
        _grammar_path().read_text(encoding="utf-8"),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
        cache=True,
    )


def parse_file(path: str | Path) -> Spec:
    path = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read spec '{path}': {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError("spec is not valid UTF-8 text", Loc(path, line, 1)) from None
    return parse_text(text, path)


def parse_text(text: str, path: str = "<spec>") -> Spec:
    register_source(path, text)
    try:
        tree = _parser().parse(text if text.endswith("\n") else text + "\n")
    except lark.exceptions.UnexpectedInput as exc:
        raise InputError(_syntax_message(exc), _error_loc(exc, path, text)) from None
    return _build(tree, path, text)


def _error_loc(exc: lark.exceptions.UnexpectedInput, path: str, text: str) -> Loc:
    line, col = getattr(exc, "line", -1), getattr(exc, "column", -1)
    if line is None or line < 1:  # end of input
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    return Loc(path, line, col)


def _syntax_message(exc: lark.exceptions.UnexpectedInput) -> str:
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        return f"unexpected character {exc.char!r}"
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        token = exc.token
        got = "end of line" if token.type == "_NL" else "end of file" if token.type == "$END" else repr(str(token))
        # `accepts` is what the parser would really take here; `expected` can include tokens
        # of merged LALR states that make no sense to the reader.
        accepted = getattr(exc, "accepts", None) or exc.expected
        expected = sorted({_TERMINAL_NAMES.get(t, repr(t)) for t in accepted})
        hint = ""
        if "EQUAL" in accepted:
            hint = " (settings are written `key = value`)"
        return f"unexpected {got}; expected {_join_or(expected)}{hint}"
    return "syntax error"


def _join_or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


# ---- tree → AST ---------------------------------------------------------------


def _loc(path: str, meta_or_token, width: int | None = None) -> Loc:
    line, col = meta_or_token.line, meta_or_token.column
    end = getattr(meta_or_token, "end_column", None)
    if width is not None:
        end = col + width
    return Loc(path, line, col, end if end and getattr(meta_or_token, "end_line", line) == line else None)


def _value(node, path: str) -> Value:
    if isinstance(node, lark.Tree):
        kind = node.data
        if kind == "call":
            callee, *args = node.children
            return Value("call", str(callee), _loc(path, callee), tuple(_argument(a, path) for a in args))
        token = node.children[0]
        if kind == "number":
            text = str(token)
            number = int(text) if text.lstrip("+-").isdigit() else float(text)
            return Value("number", number, _loc(path, token))
        if kind == "string":
            return Value("string", bytes(str(token)[1:-1], "utf-8").decode("unicode_escape"), _loc(path, token))
        return Value("name", str(token), _loc(path, token))
    raise AssertionError(f"unexpected value node {node!r}")


def _argument(node: lark.Tree, path: str) -> Argument:
    if len(node.children) == 2:
        key, value = node.children
        return Argument(str(key), _value(value, path), _loc(path, key))
    value = _value(node.children[0], path)
    return Argument(None, value, value.loc)


def _row(node: lark.Tree, path: str) -> Row:
    cells = []
    bar = None
    for child in node.children:
        if isinstance(child, lark.Token):  # a BAR: an empty cell is reported just after it
            bar = child
            continue
        atoms = tuple(Atom(t.type, str(t), _loc(path, t)) for t in child.children)
        if atoms:
            first, last = atoms[0].loc, atoms[-1].loc
            loc = Loc(path, first.line, first.col, last.end_col) if len(atoms) > 1 else first
        else:
            loc = Loc(path, bar.line, bar.column + 1)
        cells.append(Cell(atoms, loc))
    return Row(tuple(cells), _loc(path, node.meta))


def _build(tree: lark.Tree, path: str, text: str) -> Spec:
    settings: list[Setting] = []
    tables: list[Table] = []
    problems = Collector()
    current: Table | None = None
    statements = tree.children
    blocks: list[BlockDef] = []
    parts: list[PartDecl] = []
    part = ""
    for i, stmt in enumerate(statements):
        if stmt.data == "block":
            blocks.append(_block(stmt, path))
            current = None
        elif stmt.data == "part":
            (name,) = stmt.children
            part = str(name)
            parts.append(PartDecl(part, _loc(path, name)))
            current = None
        elif stmt.data == "setting":
            key, *values = stmt.children
            settings.append(Setting(str(key), tuple(_value(v, path) for v in values), _loc(path, key), part or None))
            current = None  # a table is a run of rows; a setting ends it
        elif stmt.data == "rule":
            if i == 0 or statements[i - 1].data != "row":
                problems.error("table rule without a header row above it", _loc(path, stmt.meta))
        else:
            row = _row(stmt, path)
            if i + 1 < len(statements) and statements[i + 1].data == "rule":  # Markdown: header, then rule
                current = Table(row, part=part)
                tables.append(current)
            elif current is None:
                if i > 0 and statements[i - 1].data == "row":
                    continue  # reported once, at the first row of the run
                problems.error(
                    "table row outside a table; a table starts with a header row naming its columns, "
                    "followed by a rule line such as |---|---|",
                    row.loc,
                )
            else:
                current.rows.append(row)
    problems.raise_if_any()
    return Spec(path, text, settings, tables, blocks, parts)


# ---- block definitions --------------------------------------------------------------


def _block(node: lark.Tree, path: str) -> BlockDef:
    name, *rest = node.children
    params = tuple(_param(p, path) for p in rest if isinstance(p, lark.Tree) and p.data == "param")
    layers = tuple(_layer(layer, path) for layer in rest if isinstance(layer, lark.Tree) and layer.data == "layer")
    return BlockDef(str(name), params, layers, _loc(path, name))


def _param(node: lark.Tree, path: str) -> Param:
    name, *rest = node.children
    type_ = next((str(c) for c in rest if isinstance(c, lark.Token)), None)
    default = next((_expr(c, path) for c in rest if isinstance(c, lark.Tree)), None)
    return Param(str(name), type_, default, _loc(path, name))


def _layer(node: lark.Tree, path: str) -> Layer:
    children = list(node.children)
    name = name_loc = None
    if len(children) >= 2 and isinstance(children[0], lark.Token) and isinstance(children[1], lark.Token):
        name, name_loc = str(children[0]), _loc(path, children[0])
        children = children[1:]
    primitive, *rest = children
    args = tuple(_arg(a, path) for a in rest if isinstance(a, lark.Tree) and a.data == "arg")
    conditions = [c for c in rest if not (isinstance(c, lark.Tree) and c.data == "arg")]
    condition = _expr(conditions[0], path) if conditions else None
    return Layer(name, str(primitive), args, condition, _loc(path, primitive), name_loc)


def _arg(node: lark.Tree, path: str):
    if len(node.children) == 2:
        key, value = node.children
        return str(key), _expr(value, path)
    return None, _expr(node.children[0], path)


def _expr(node, path: str) -> Expr:
    if isinstance(node, lark.Token):  # a bare operand under an inlined rule
        return _expr_token(node, path)
    kind = node.data
    if kind == "number":
        return _expr_token(node.children[0], path, "number")
    if kind == "name":
        return Expr("name", str(node.children[0]), (), _loc(path, node.children[0]))
    if kind == "func":
        fname, *args = node.children
        return Expr("func", str(fname), tuple(_expr(a, path) for a in args), _loc(path, fname))
    if kind in ("not_", "neg"):
        operand = _expr(node.children[0], path)
        return Expr("not" if kind == "not_" else "neg", None, (operand,), _loc(path, node.meta))
    if kind in ("or_expr", "and_expr"):
        operands = tuple(_expr(c, path) for c in node.children)
        return Expr("or" if kind == "or_expr" else "and", None, operands, operands[0].loc)
    if kind in ("sum", "product", "comparison"):
        # left-associative chain: operand (op operand)*
        result = _expr(node.children[0], path)
        for op, operand in zip(node.children[1::2], node.children[2::2]):
            result = Expr(
                "compare" if kind == "comparison" else "binop", str(op), (result, _expr(operand, path)), _loc(path, op)
            )
        return result
    raise AssertionError(f"unexpected expression node {kind}")


def _expr_token(token: lark.Token, path: str, kind: str | None = None) -> Expr:
    text = str(token)
    if kind == "number" or token.type == "SIGNED_NUMBER":
        value = int(text) if text.lstrip("+-").isdigit() else float(text)
        return Expr("number", value, (), _loc(path, token))
    return Expr("name", text, (), _loc(path, token))
