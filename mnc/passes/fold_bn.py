"""Fold inference batch norm into the convolution or fully connected layer before it.

    y = γ·(W·x + b − μ)/√(σ² + ε) + β  =  (s·W)·x + (s·(b − μ) + β),   s = γ/√(σ² + ε)

Computed in float64 and stored in float32. Only where it is safe: the producer has no
other user, is not a graph output and has no fused activation (the activation would sit
between the two).
"""

from __future__ import annotations

import numpy as np

from mnc.ir.graph import Graph
from mnc.passes.base import Pass, absorbing_producer, register


def fold_bn(graph: Graph) -> bool:
    changed = False
    for name in graph.topo():
        if name not in graph or graph.node(name).op != "batchnorm":
            continue
        producer = absorbing_producer(graph, name)
        if producer is None:
            continue
        pdata = graph.node(producer)
        bn = {k: v.astype(np.float64) for k, v in graph.node(name).params.items()}
        scale = bn["gamma"] / np.sqrt(bn["var"] + graph.node(name).attrs["eps"])
        weight = pdata.params["weight"].astype(np.float64)
        bias = pdata.params["bias"].astype(np.float64) if pdata.attrs["bias"] else np.zeros(weight.shape[0])
        weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        pdata.params = {
            "weight": weight.astype(np.float32),
            "bias": ((bias - bn["mean"]) * scale + bn["beta"]).astype(np.float32),
        }
        pdata.attrs["bias"] = True
        graph.absorb(producer, name)
        changed = True
    return changed


register(
    Pass(
        "fold_bn",
        "fold batch norm into the preceding conv/fc",
        fold_bn,
        requires=("unquantized",),
        ensures=("batchnorm_folded",),
    )
)
