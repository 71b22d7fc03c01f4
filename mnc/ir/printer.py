"""Readable text form of the IR: one node per line, with shape, attributes and source line."""

from __future__ import annotations

from mnc.ir.graph import Graph


def _attr(key: str, value) -> str | None:
    if value is None or value is False or key == "shape":
        return None
    if value is True:
        return key
    if key in ("kernel", "stride") and len(set(value)) == 1:
        return f"{key}={value[0]}"
    if isinstance(value, list):
        return f"{key}=[{','.join(map(str, value))}]"
    return f"{key}={value}"


def format_graph(graph: Graph) -> str:
    outputs = ", ".join(f"{o} as {graph.output_labels[o]}" if o in graph.output_labels else o for o in graph.outputs)
    lines = [f"graph {graph.name}  # inputs: {', '.join(graph.inputs)}; outputs: {outputs}"]
    for name in graph.topo():
        data = graph.node(name)
        args = ", ".join(graph.inputs_of(name))
        attrs = " ".join(filter(None, (_attr(k, v) for k, v in data.attrs.items())))
        shape = "×".join(map(str, data.shape)) if data.shape is not None else "?"
        params = " ".join(f"{k}{list(v.shape)}" for k, v in data.params.items())
        src = f"line {data.src.line}" if data.src else ""
        text = f"{name} = {data.op}({args})"
        if attrs:
            text += f" {attrs}"
        text += f" -> {shape}"
        if params:
            text += f"  {{{params}}}"
        lines.append(f"  {text}  # {src}")
    return "\n".join(lines)
