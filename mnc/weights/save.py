"""Writing a network's weights in mnc's own layout: `<IR node>.<param>`, as safetensors."""

from __future__ import annotations

from mnc.ir.graph import Graph
from mnc.weights.node_names import checkpoint_key


def weights_bytes(graph: Graph, metadata: dict[str, str]) -> bytes:
    from safetensors.numpy import save

    tensors = {checkpoint_key(n, p): a for n in graph.topo() for p, a in sorted(graph.node(n).params.items())}
    return save(tensors, metadata={"format": "mnc", **metadata})
