"""The spec front end: parse text, check names and values, lower to IR with α and ρ."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mnc.errors import Collector, Loc, did_you_mean
from mnc.frontend.ast import CLASSES_SYMBOL, BlockDef, LayerRow
from mnc.frontend.blocks import check_block
from mnc.frontend.budget import Budget
from mnc.frontend.lower import lower
from mnc.frontend.parser import parse_file, parse_text
from mnc.frontend.prelude import builtin_blocks
from mnc.frontend.settings import Config, Settings, check_settings, resolve
from mnc.frontend.table import check_tables
from mnc.ir.graph import Graph

__all__ = ["CheckedSpec", "Config", "load_spec", "load_spec_text", "build_graph"]


@dataclass(frozen=True)
class CheckedSpec:
    path: str
    text: str
    sha256: str
    settings: Settings
    rows: list[LayerRow]
    blocks: dict  # name → BlockDef: the built-in blocks and the spec's own

    def config(
        self,
        alpha: float | None = None,
        rho: float | None = None,
        resolution: int | None = None,
        classes: int | None = None,
    ) -> Config:
        return resolve(self.settings, alpha, rho, resolution, classes)


def bundled_spec(name: str) -> Path:
    """A spec of the top-level specs/ folder, which an installed mnc carries inside the package."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "specs" / name
    return packaged if packaged.exists() else here.parent / "specs" / name


def load_spec(path) -> CheckedSpec:
    return _check(parse_file(path))


def load_spec_text(text: str, path: str = "<spec>") -> CheckedSpec:
    return _check(parse_text(text, path))


def _check(ast) -> CheckedSpec:
    problems = Collector()
    settings = check_settings(ast.settings, problems, ast.path)
    blocks = _blocks(ast.blocks, problems)
    rows = check_tables(ast.tables, blocks, problems)
    if not rows and not problems.diagnostics:
        problems.error(
            "the spec has no layers; add a table whose header names the columns, e.g. | operator | c | n | s |",
            ast.tables[0].header.loc if ast.tables else Loc.file(ast.path),
        )
    if settings is not None:
        _check_outputs(settings, rows, ast.parts, problems)
    problems.raise_if_any()
    spec = CheckedSpec(ast.path, ast.text, hashlib.sha256(ast.text.encode()).hexdigest(), settings, rows, blocks)
    _check_documented_sizes(spec)
    return spec


def _check_outputs(settings: Settings, rows: list[LayerRow], parts, problems: Collector) -> None:
    taps = [row.tap.name for row in rows if row.tap is not None]
    loc = settings.locs.get("outputs")
    for name in settings.outputs:
        if name not in taps:
            problems.error(
                f"output '{name}' is not a tap" + did_you_mean(name, taps) + f"; taps are {', '.join(taps) or 'none'}",
                loc,
            )
    anchors = settings.anchors
    if anchors is not None and anchors.output not in settings.outputs:
        problems.error(
            f"anchors are for output '{anchors.output}', which is not one of the outputs "
            f"({', '.join(settings.outputs) or 'none are named: set outputs = …'})",
            anchors.loc,
        )
    declared: dict[str, Loc] = {}
    for part in parts:
        if part.name in declared:
            problems.error(
                f"part '{part.name}' is declared twice", part.loc, notes=[("first here", declared[part.name])]
            )
        declared[part.name] = part.loc
    for name in settings.parts:
        if not any(row.part == name for row in rows):
            problems.error(f"part '{name}' has settings but no rows", declared.get(name, Loc.file("<spec>")))


def _blocks(definitions: list[BlockDef], problems: Collector) -> dict[str, BlockDef]:
    blocks = dict(builtin_blocks())
    own: dict[str, BlockDef] = {}
    for defn in definitions:
        check_block(defn, problems)
        if defn.name in own:
            problems.error(
                f"block '{defn.name}' is defined twice", defn.loc, notes=[("first defined here", own[defn.name].loc)]
            )
        elif defn.name in blocks:
            problems.error(f"block '{defn.name}' is built in; give yours another name", defn.loc)
        own[defn.name] = defn
    return {**blocks, **own}


def build_graph(spec: CheckedSpec, config: Config, max_memory: int | None = None) -> Graph:
    graph, _ = lower(spec.rows, spec.blocks, config, Budget.for_machine(max_memory))
    return graph


def _check_documented_sizes(spec: CheckedSpec) -> None:
    """The `input` column states each row's input size at α = 1 and the base resolution, as the
    papers print it. Lower at that configuration and compare, so a wrong stride or width in
    the table is caught where it is written."""
    if not any(row.documented_input for row in spec.rows):
        return
    nominal = resolve(spec.settings, alpha=1.0, resolution=spec.settings.base_resolution)
    # Only shapes are compared: the memory this configuration would need is not this build's, and
    # must not fail a build that is given less (or a machine short of memory at this moment).
    graph, stage_inputs = lower(spec.rows, spec.blocks, nominal, Budget.shapes_only())
    problems = Collector()
    classes = spec.settings.classes
    for row in spec.rows:
        if row.documented_input is None:
            continue
        actual = graph.node(stage_inputs[row.index]).shape
        actual_hwc = (
            (actual[1], actual[2], actual[0])
            if len(actual) == 3
            else (1, *actual)
            if len(actual) == 2
            else (1, 1, actual[0])
        )
        written = tuple(classes if d == CLASSES_SYMBOL else d for d in row.documented_input)
        if written != actual_hwc:
            problems.error(
                f"the input column says {_hwc(written)} but the rows above produce {_hwc(actual_hwc)} "
                f"at α = 1 and resolution {nominal.resolution}",
                row.cell_locs["input"],
            )
    problems.raise_if_any()


def _hwc(shape) -> str:
    return " × ".join(map(str, shape))
