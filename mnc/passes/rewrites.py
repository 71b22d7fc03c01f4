"""Rewrites a target's runtime needs: IR → IR changes a Target asks for by name (`Target.rewrites`),
run on the graph it is about to lower (after the passes and the int8 quantisation), on a copy.
Coremltools registers its backend passes in a namespace of their own, and tinygrad's renderers
list what they lower natively and let shared rules rewrite the rest: here a target lowers only
what its runtime has, and asks for the rest to be rewritten into that; each rewrite is written
once, for every target that needs it. Every region a rewrite changes is checked where it is made
(mnc/passes/rewriting.py), and recorded in the report.
"""

from __future__ import annotations

import time

from mnc.ir.graph import Graph, GraphError
from mnc.ir.shapes import check_shapes
from mnc.passes import hard_sigmoid, image_input
from mnc.passes.rewriting import Rewrite, RewriteError, check_region

REWRITES: dict[str, Rewrite] = {r.name: r for r in (image_input.REWRITE, hard_sigmoid.REWRITE)}


def run_rewrites(graph: Graph, rewrites: list[tuple[str, dict]], *, target: str) -> tuple[Graph, list[dict]]:
    """Run a target's rewrites ((name, options), in order) on a copy of `graph`, each region checked;
    returns the rewritten graph (`graph` itself where none changed it) and one record per rewrite."""
    records = []
    for name, options in rewrites:
        rewrite = REWRITES.get(name)
        if rewrite is None:
            raise RewriteError(f"target '{target}' asks for the rewrite '{name}'; rewrites are {', '.join(REWRITES)}")
        start = time.perf_counter()
        original, graph = graph, graph.copy()
        try:
            regions = rewrite.run(graph, **options)
            graph.validate(require_params=True)
            check_shapes(graph)
        except (GraphError, KeyError, ValueError) as exc:
            raise RewriteError(f"rewrite '{name}' for target '{target}' broke the graph: {exc}") from exc
        worst = max((check_region(original, graph, region, name, target) for region in regions), default=0.0)
        if not regions:  # nothing to rewrite: the graph as it was
            graph = original
        records.append(
            {
                "name": name,
                "regions": len(regions),
                "nodes_before": len(original),
                "nodes_after": len(graph),
                "max_error_over_bound": round(worst, 4),
                "seconds": round(time.perf_counter() - start, 5),
            }
        )
    return graph, records
