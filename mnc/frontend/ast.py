"""The syntax tree of a spec: what was written, where, before any meaning is given to it."""

from __future__ import annotations

from dataclasses import dataclass, field

from mnc.errors import Loc

# In a table, `k` for a channel count means the number of classes.
CLASSES_SYMBOL = "k"


@dataclass(frozen=True)
class Value:
    """A setting value: a number, a bare name, a string, or a call `f(a, k=v)`."""

    kind: str  # "number" | "name" | "string" | "call"
    value: object  # float/int, str, or the callee name for calls
    loc: Loc
    args: tuple["Argument", ...] = ()

    def describe(self) -> str:
        if self.kind == "call":
            inner = ", ".join((f"{a.key}=" if a.key else "") + a.value.describe() for a in self.args)
            return f"{self.value}({inner})"
        return str(self.value)


@dataclass(frozen=True)
class Argument:
    key: str | None
    value: Value
    loc: Loc


@dataclass(frozen=True)
class Setting:
    key: str
    values: tuple[Value, ...]
    loc: Loc  # the key
    part: str | None = None  # written under a `part` line: a setting of that part only


@dataclass(frozen=True)
class Atom:
    """One token of a table cell: kind is the grammar terminal (DIMS, UNUMBER, NAME, DASH, COMMA)."""

    kind: str
    text: str
    loc: Loc


@dataclass(frozen=True)
class Cell:
    atoms: tuple[Atom, ...]
    loc: Loc  # the cell's first atom, or the position after its opening bar when empty

    @property
    def text(self) -> str:
        return " ".join(a.text for a in self.atoms)

    @property
    def is_empty(self) -> bool:
        """Empty or `-`: the table's way of saying "not applicable"."""
        return not self.atoms or (len(self.atoms) == 1 and self.atoms[0].kind == "DASH")


@dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    loc: Loc


@dataclass
class Table:
    header: Row
    rows: list[Row] = field(default_factory=list)
    part: str = ""  # "": the network's first part, above any `part` line


@dataclass(frozen=True)
class PartDecl:
    name: str
    loc: Loc


@dataclass
class Spec:
    path: str
    text: str
    settings: list[Setting]
    tables: list[Table]
    blocks: list = field(default_factory=list)  # BlockDef
    parts: list[PartDecl] = field(default_factory=list)


@dataclass(frozen=True)
class Expr:
    """An expression in a block definition. kind: number, name, func, binop, compare, and, or, not, neg."""

    kind: str
    value: object  # the number, the name, the function name or the operator
    args: tuple["Expr", ...]
    loc: Loc


@dataclass(frozen=True)
class Param:
    name: str
    type: str | None  # channels, int, float, flag, act; None: a number
    default: Expr | None
    loc: Loc


@dataclass(frozen=True)
class Layer:
    """One line of a block body: `[name =] primitive(args) [if condition]`."""

    name: str | None
    primitive: str
    args: tuple[tuple[str | None, Expr], ...]
    condition: Expr | None
    loc: Loc  # the primitive's name
    name_loc: Loc | None


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    layers: tuple[Layer, ...]
    loc: Loc  # the block's name


@dataclass(frozen=True)
class TapRef:
    """A tap named in a table cell (`from`, or a parameter of type tap)."""

    name: str
    loc: Loc


@dataclass(frozen=True)
class TapDef:
    """A row's `tap` cell: `name` exports the row's output, `layer as name` one of its block's layers."""

    name: str
    layer: str | None
    loc: Loc


@dataclass(frozen=True)
class LayerRow:
    index: int  # position among all table rows of the spec: the "stage" in node names
    block: str
    values: dict  # parameter → value given by the row (channels may be CLASSES_SYMBOL; taps TapRef)
    width: str | None  # a width modifier: no_shrink or fixed
    repeats: int
    documented_input: tuple | None  # (H, W, C) as written in the input column; entries may be "k"
    loc: Loc  # the operator cell
    cell_locs: dict  # column → Loc
    part: str = ""
    inputs: tuple[TapRef, ...] = ()  # the `from` cell; empty: the previous row's output
    tap: TapDef | None = None
