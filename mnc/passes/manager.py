"""Pipelines: named, ordered lists of passes, checked before they run and validated after each pass."""

from __future__ import annotations

import time
import traceback

from mnc.errors import InputError, Loc, MncError, did_you_mean, param
from mnc.ir.graph import Graph, GraphError
from mnc.ir.ops import ShapeError
from mnc.ir.shapes import check_shapes
from mnc.passes import cleanup, fold_bn, fuse_act, quantize  # noqa: F401  (registers the passes)
from mnc.passes.base import PASSES, PROPERTIES, Pass

PIPELINES: dict[str, list[str]] = {
    "none": [],
    "default": ["fold_bn", "fuse_act", "cleanup"],
}


class PassError(MncError):
    """A pass broke the graph or its promise: a bug in mnc, reported with everything needed to find it."""


def resolve_pipeline(text: str) -> list[str]:
    """`none`, `default`, or a comma-separated list of pass names; ordering constraints checked."""
    if text in PIPELINES:
        names = list(PIPELINES[text])
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names:
            raise InputError(f"{param('passes')} '{text}': name a pipeline ({', '.join(PIPELINES)}) or list passes")
        for n in names:
            if n not in PASSES:
                raise InputError(
                    f"{param('passes')}: unknown pass '{n}'"
                    + did_you_mean(n, PASSES)
                    + f"; passes are {', '.join(PASSES)}; pipelines are {', '.join(PIPELINES)}"
                )
    check_order(names)
    return names


def check_order(names: list[str]) -> None:
    for i, name in enumerate(names):
        for earlier in PASSES[name].after:
            if earlier in names[i + 1 :] and earlier not in names[:i]:
                raise InputError(
                    f"{param('passes')}: '{earlier}' must run before '{name}' "
                    f"({PASSES[name].name} works on what {earlier} leaves)"
                )


def check_options(names: list[str], options: dict[str, dict]) -> None:
    """Every pass of the pipeline gets the options it needs, and only passes of it get options."""
    for name in names:
        missing = [o for o in PASSES[name].options if o not in options.get(name, {})]
        if missing:
            needs = "; ".join(f"{o}: from {PASSES[name].options[o]}" for o in missing)
            raise InputError(f"{param('passes')}: pass '{name}' cannot run on its own; it needs {needs}")
    for name in options:
        if name not in names:
            raise InputError(f"options for pass '{name}', which the pipeline does not run")


def run_pipeline(
    graph: Graph, names: list[str], *, options: dict[str, dict] | None = None, stop_after: str | None = None
) -> tuple[Graph, list[dict]]:
    """Run the passes on a copy of `graph`; returns the new graph and one record per pass.
    `options` maps a pass name to the keyword arguments it runs with."""
    options = options or {}
    check_order(names)
    check_options(names, options)
    graph = graph.copy()
    records = []
    for i, name in enumerate(names):
        p = PASSES[name]
        before, nodes_before = graph.op_counts(), set(graph)
        start = time.perf_counter()
        try:
            _check_properties(graph, p, p.requires, "requires")
            result = p.run(graph, **options.get(name, {}))
            changed, details = result if isinstance(result, tuple) else (result, {})
            graph.validate(require_params=True)
            check_shapes(graph)
            _check_properties(graph, p, p.ensures, "promised", options.get(name, {}))
        except (GraphError, ShapeError, KeyError, ValueError) as exc:
            raise _pass_error(name, names[:i], exc) from exc
        after = graph.op_counts()
        records.append(
            {
                "name": name,
                "changed": changed,
                "seconds": round(time.perf_counter() - start, 5),
                "nodes_before": sum(before.values()),
                "nodes_after": sum(after.values()),
                "removed": len(nodes_before - set(graph)),
                "ops_before": before,
                "ops_after": after,
                **details,
            }
        )
        if name == stop_after:
            break
    return graph, records


def _check_properties(graph: Graph, p: Pass, properties: tuple[str, ...], verb: str, options=None) -> None:
    for prop in properties:
        bad = PROPERTIES[prop](graph, **(options or {}))
        if bad:
            raise GraphError(f"{verb} '{prop}' but {len(bad)} node(s) violate it", bad[0], graph.node(bad[0]).src)


def _pass_error(name: str, earlier: list[str], exc: Exception) -> PassError:
    node = getattr(exc, "node", None)
    src: Loc | None = getattr(exc, "src", None)
    where = f" at node '{node}'" if node else ""
    ran = ", ".join(earlier) if earlier else "none"
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return PassError(f"internal error in pass '{name}'{where} (passes run before it: {ran}): {detail}", src)
