"""Lowering: checked table rows + (α, resolution) → IR graph.

Shapes are inferred node by node as the graph is built (through the op registry),
because explicit TF-'SAME' padding depends on the size of each layer's input.
"""

from __future__ import annotations

import dataclasses

from mnc.errors import InputError, Loc, choices_hint
from mnc.frontend.ast import CLASSES_SYMBOL, BlockDef, LayerRow, TapRef
from mnc.frontend.budget import Budget
from mnc.frontend.emitter import Emitter
from mnc.frontend.runner import run_block
from mnc.frontend.settings import Config
from mnc.frontend.table import IMAGE_TAP, row_arguments
from mnc.ir.graph import Graph
from mnc.ir.shapes import infer_node


def lower(
    rows: list[LayerRow], blocks: dict[str, BlockDef], config: Config, budget: Budget | None = None
) -> tuple[Graph, dict[int, str]]:
    """The graph, and the tensor entering each table row (by row index). The budget (this machine's
    memory by default) stops a network that would not fit at the row that makes it too large.

    A row reads the previous row's output, or the taps its `from` cell names; a row with a `tap`
    cell exports its output (or one of its block's layers) by name. The graph's outputs are the
    taps the `outputs` setting names, else the last row's output."""
    s = config.settings
    graph = Graph(s.name)
    e = Emitter(graph, config, budget or Budget.for_machine())
    first = rows[0].loc if rows else Loc("<spec>", 1, 1)
    e.current = graph.add(
        "input",
        "input",
        attrs={"shape": [s.input_channels, config.resolution, config.resolution]},
        src=s.locs.get("input_channels", first),
    )
    infer_node(graph, e.current)
    taps = {IMAGE_TAP: e.current}
    stage_inputs = {}
    for row in rows:
        e.config = dataclasses.replace(config, settings=s.of_part(row.part))
        inputs = [_tap(taps, ref) for ref in row.inputs] or [e.current]
        e.current = inputs[0]
        stage_inputs[row.index] = e.current
        defn = blocks[row.block]
        args = row_arguments(row, defn)
        for p in defn.params:
            if p.type == "channels":
                args[p.name] = e.scale(args[p.name], row.width)
            elif p.type == "tap":
                args[p.name] = _tap(taps, args[p.name])
            elif args[p.name] == CLASSES_SYMBOL:
                args[p.name] = config.classes
        for j in range(row.repeats):
            e.begin(row, j)
            built = run_block(defn, e, {**args, "s": 1} if j and "s" in args else args, row.loc, inputs)
        if row.tap is not None:
            if row.tap.layer is not None and row.tap.layer not in built:
                raise InputError(
                    f"layer '{row.tap.layer}' of '{row.block}' is not built in this row (its condition is false)",
                    row.tap.loc,
                )
            taps[row.tap.name] = built[row.tap.layer] if row.tap.layer is not None else e.current
    e.config = config
    if s.outputs:
        graph.outputs = [_tap(taps, TapRef(name, s.locs["outputs"])) for name in s.outputs]
        graph.output_labels = {node: name for node, name in zip(graph.outputs, s.outputs)}
        if len(set(graph.outputs)) != len(graph.outputs):
            raise InputError("two of the outputs name the same tensor", s.locs["outputs"])
        dead = graph.dead_nodes()
        if dead:
            first = min(dead, key=lambda n: graph.node(n).src.line)
            raise InputError(
                f"layer '{first}' feeds none of the network's outputs ({', '.join(s.outputs)}): "
                "name what it computes in `outputs`, or remove it",
                graph.node(first).src,
            )
    else:
        graph.outputs = [e.current]
    return graph, stage_inputs


def _tap(taps: dict[str, str], ref: TapRef) -> str:
    if ref.name not in taps:
        raise InputError(f"no tap named '{ref.name}'" + choices_hint(ref.name, taps, "taps", ", ".join), ref.loc)
    return taps[ref.name]
