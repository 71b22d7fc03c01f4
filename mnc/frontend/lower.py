"""Lowering: checked table rows + (α, resolution) → IR graph.

Shapes are inferred node by node as the graph is built (through the op registry),
because explicit TF-'SAME' padding depends on the size of each layer's input.
"""

from __future__ import annotations

from mnc.errors import Loc
from mnc.frontend.ast import BlockDef, LayerRow
from mnc.frontend.blocks import run_block
from mnc.frontend.budget import Budget
from mnc.frontend.emitter import Emitter
from mnc.frontend.settings import Config
from mnc.frontend.table import row_arguments
from mnc.ir.graph import Graph
from mnc.ir.shapes import infer_node


def lower(
    rows: list[LayerRow], blocks: dict[str, BlockDef], config: Config, budget: Budget | None = None
) -> tuple[Graph, dict[int, str]]:
    """The graph, and the tensor entering each table row (by row index). The budget (this machine's
    memory by default) stops a network that would not fit at the row that makes it too large."""
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
    stage_inputs = {}
    for row in rows:
        stage_inputs[row.index] = e.current
        defn = blocks[row.block]
        args = row_arguments(row, defn)
        for p in defn.params:
            if p.type == "channels":
                args[p.name] = e.scale(args[p.name], row.width)
        for j in range(row.repeats):
            e.begin(row, j)
            run_block(defn, e, {**args, "s": 1} if j and "s" in args else args, row.loc)
    graph.outputs = [e.current]
    return graph, stage_inputs
