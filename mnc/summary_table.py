"""`mnc summary`: the per-layer table of shapes, parameters and MACs, and totals."""

from __future__ import annotations

from mnc.frontend import CheckedSpec, Config
from mnc.ir.cost import node_cost
from mnc.ir.graph import Graph


def layers(graph: Graph) -> list[dict]:
    rows = []
    for name in graph.topo():
        data = graph.node(name)
        if data.op == "input":
            continue
        (producer, *_) = graph.inputs_of(name)
        cost = node_cost(graph, name)
        attrs = data.attrs
        row = {
            "name": name,
            "op": _op_label(graph, name),
            "kernel": attrs["kernel"][0] if "kernel" in attrs else None,
            "stride": attrs["stride"][0] if "stride" in attrs else None,
            "input_shape": list(graph.node(producer).shape),
            "output_shape": list(data.shape),
            "params": cost.params,
            "macs": cost.macs,
            "line": data.src.line if data.src else None,
        }
        rows.append(row)
    return rows


def _op_label(graph: Graph, name: str) -> str:
    data = graph.node(name)
    attrs = data.attrs
    if data.op == "conv" and attrs["groups"] > 1:
        return "conv_dw" if graph.is_depthwise(name) else f"conv_g{attrs['groups']}"
    if data.op == "act":
        return attrs["fn"]
    return data.op


def summary_dict(spec: CheckedSpec, config: Config, graph: Graph) -> dict:
    rows = layers(graph)
    part_of_stage = {f"stage{row.index}": row.part for row in spec.rows}
    parts: dict[str, dict] = {}  # in the spec's order
    for row in spec.rows:
        parts.setdefault(row.part, {"name": row.part, "layers": 0, "params": 0, "macs": 0})
    for r in rows:
        part = part_of_stage.get(r["name"].split(".")[0], "")
        r["part"] = part
        total = parts.setdefault(part, {"name": part, "layers": 0, "params": 0, "macs": 0})
        total["layers"] += 1
        total["params"] += r["params"]
        total["macs"] += r["macs"]
    return {
        "name": spec.settings.name,
        "spec": spec.path,
        "alpha": config.alpha,
        "resolution": config.resolution,
        "rho": round(config.rho, 6),
        "classes": config.classes,
        "macs": sum(r["macs"] for r in rows),
        "params": sum(r["params"] for r in rows),
        "outputs": [
            {"name": name, "node": node, "shape": list(graph.node(node).shape)}
            for node, name in zip(graph.outputs, output_names(graph))
        ],
        "parts": list(parts.values()) if any(parts) else [],
        "layers": rows,
    }


def output_names(graph: Graph) -> list[str]:
    if graph.output_labels:
        return [graph.output_labels[o] for o in graph.outputs]
    return ["output"]


def _shape(shape: list[int]) -> str:
    if len(shape) == 3:  # printed H×W×C, as the papers do
        c, h, w = shape
        return f"{h}×{w}×{c}"
    return "×".join(map(str, shape))


def format_table(summary: dict) -> str:
    header = ("layer", "op", "k/s", "input", "output", "params", "MACs")
    body = []
    for r in summary["layers"]:
        ks = f"{r['kernel']}x{r['kernel']}/{r['stride']}" if r["kernel"] else ""
        body.append(
            (
                r["name"],
                r["op"],
                ks,
                _shape(r["input_shape"]),
                _shape(r["output_shape"]),
                f"{r['params']:,}" if r["params"] else "",
                f"{r['macs']:,}" if r["macs"] else "",
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    right = {5, 6}

    def line(cells) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    total = (
        f"{summary['name']}  α={summary['alpha']:g}  resolution={summary['resolution']}  classes={summary['classes']}"
    )
    out = [
        line(header),
        rule,
        *map(line, body),
        rule,
        f"{total}\ntotal: {summary['params']:,} params ({summary['params'] / 1e6:.2f} M), "
        f"{summary['macs']:,} MACs ({summary['macs'] / 1e6:.1f} M)",
    ]
    for part in summary["parts"]:
        out.append(
            f"  part {part['name'] or '(unnamed)'}: {part['layers']} layers, {part['params']:,} params, "
            f"{part['macs']:,} MACs"
        )
    if summary["outputs"][0]["name"] != "output":
        for o in summary["outputs"]:
            out.append(f"  output {o['name']}: {_shape(o['shape'])} per sample (from {o['node']})")
    return "\n".join(out)
