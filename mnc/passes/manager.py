"""Pipelines: named, ordered lists of passes, checked before they run and validated after each pass."""
from __future__ import annotations

import time
import traceback
from collections import Counter

from mnc.errors import InputError, Loc, MncError
from mnc.ir.graph import Graph, GraphError
from mnc.ir.ops import OPS, ShapeError
from mnc.passes import cleanup, fold_bn, fuse_act, quantize  # noqa: F401  (registers the passes)
from mnc.passes.base import PASSES, PROPERTIES
from mnc.spec.suggest import did_you_mean

PIPELINES: dict[str, list[str]] = {
    "none": [],
    "default": ["fold_bn", "fuse_act", "cleanup"],
}


class PassError(MncError):
    """A pass broke the graph or its promise: a bug in mnc, reported with everything needed to find it."""

    exit_code = 1


def resolve_pipeline(text: str) -> list[str]:
    """`none`, `default`, or a comma-separated list of pass names; ordering constraints checked."""
    if text in PIPELINES:
        names = list(PIPELINES[text])
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names:
            raise InputError(f"--passes '{text}': name a pipeline ({', '.join(PIPELINES)}) or list passes")
        for n in names:
            if n not in PASSES:
                raise InputError(f"--passes: unknown pass '{n}'" + did_you_mean(n, PASSES)
                                 + f"; passes are {', '.join(PASSES)}; pipelines are {', '.join(PIPELINES)}")
    check_order(names)
    return names


def check_order(names: list[str]) -> None:
    for i, name in enumerate(names):
        for earlier in PASSES[name].after:
            if earlier in names[i + 1:] and earlier not in names[:i]:
                raise InputError(f"--passes: '{earlier}' must run before '{name}' "
                                 f"({PASSES[name].name} works on what {earlier} leaves)")


def run_pipeline(graph: Graph, names: list[str], *, stop_after: str | None = None) -> tuple[Graph, list[dict]]:
    """Run the passes on a copy of `graph`; returns the new graph and one record per pass."""
    check_order(names)
    graph = graph.copy()
    records = []
    for i, name in enumerate(names):
        p = PASSES[name]
        before = Counter(graph.node(n)["op"] for n in graph.nx)
        nodes_before = set(graph.nx)
        start = time.perf_counter()
        try:
            changed = p.run(graph)
            _check(graph, p)
        except (GraphError, ShapeError, KeyError, ValueError) as exc:
            raise _pass_error(name, names[:i], graph, exc) from exc
        after = Counter(graph.node(n)["op"] for n in graph.nx)
        records.append({
            "name": name,
            "changed": changed,
            "seconds": round(time.perf_counter() - start, 5),
            "nodes_before": sum(before.values()),
            "nodes_after": sum(after.values()),
            "removed": len(nodes_before - set(graph.nx)),
            "ops_before": dict(sorted(before.items())),
            "ops_after": dict(sorted(after.items())),
        })
        if name == stop_after:
            break
    return graph, records


def _check(graph: Graph, p) -> None:
    """What must hold after every pass: a valid graph, shapes that still follow from the op
    rules, and the properties the pass promised."""
    graph.validate(require_params=True)
    for name in graph.topo():
        data = graph.node(name)
        in_shapes = [graph.node(q)["shape"] for q in graph.inputs_of(name)]
        shape = tuple(OPS[data["op"]].infer(data["attrs"], in_shapes))
        if shape != data["shape"]:
            raise GraphError(f"shape {data['shape']} no longer follows from the inputs ({shape})", name, data["src"])
    for prop in p.ensures:
        bad = PROPERTIES[prop](graph)
        if bad:
            data = graph.node(bad[0])
            raise GraphError(f"promised '{prop}' but {len(bad)} node(s) violate it", bad[0], data["src"])


def _pass_error(name: str, earlier: list[str], graph: Graph, exc: Exception) -> PassError:
    node = getattr(exc, "node", None)
    src: Loc | None = getattr(exc, "src", None)
    where = f" at node '{node}'" if node else ""
    ran = ", ".join(earlier) if earlier else "none"
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return PassError(f"internal error in pass '{name}'{where} (passes run before it: {ran}): {detail}", src)
