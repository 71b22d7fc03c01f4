"""SSD default boxes (anchors) for a detection output, as torchvision's DefaultBoxGenerator makes
them: what an app needs beside the raw `bbox_regression` to decode boxes.

The output's rows are per_anchor predictions joined in order; each level's grid (H×W) and anchors
per location come from the graph, the scales and aspect ratios from the spec's `anchors` setting."""

from __future__ import annotations

import json
import math

import numpy as np

from mnc.errors import InputError
from mnc.frontend.settings import AnchorSpec
from mnc.ir.graph import Graph

SUFFIX = ".anchors.json"
FORMAT = (
    "one row per anchor, in the order of the rows of the output: cx, cy, w, h relative to the input's width and "
    "height (w and h clipped to [0, 1], as torchvision's DefaultBoxGenerator with clip=True)"
)


def levels(graph: Graph, anchors: AnchorSpec) -> list[tuple[int, int, int]]:
    """(H, W, anchors per location) of each level feeding the output, in row order."""
    node = next(n for n, label in graph.output_labels.items() if label == anchors.output)
    producers = graph.inputs_of(node) if graph.node(node).op == "concat" else [node]
    result = []
    for p in producers:
        if graph.node(p).op != "per_anchor":
            raise InputError(
                f"anchors: output '{anchors.output}' must be per_anchor rows (or a concat of them), "
                f"but '{p}' is a {graph.node(p).op}",
                anchors.loc,
            )
        (channels, h, w), columns = graph.input_shapes(p)[0], graph.node(p).attrs["columns"]
        per_location = channels // columns
        if per_location != anchors.per_location:
            raise InputError(
                f"anchors: level {len(result) + 1} ('{p}') predicts {per_location} boxes per location, but "
                f"ssd() with {len(anchors.aspect_ratios)} aspect ratios makes {anchors.per_location}",
                anchors.loc,
            )
        result.append((h, w, per_location))
    return result


def default_boxes(graph: Graph, anchors: AnchorSpec) -> np.ndarray:
    """[anchors, 4] float32 (cx, cy, w, h), relative to the input size."""
    grids = levels(graph, anchors)
    k = len(grids)
    if k > 1:
        scales = [anchors.min_ratio + (anchors.max_ratio - anchors.min_ratio) * i / (k - 1.0) for i in range(k)]
        scales.append(1.0)
    else:
        scales = [anchors.min_ratio, anchors.max_ratio]
    boxes = []
    for i, (h, w, _) in enumerate(grids):
        s, s_next = scales[i], scales[i + 1]
        pairs = [(s, s), (math.sqrt(s * s_next),) * 2]
        for ratio in anchors.aspect_ratios:
            root = math.sqrt(ratio)
            pairs += [(s * root, s / root), (s / root, s * root)]
        pairs = np.clip(np.asarray(pairs, dtype=np.float32), 0, 1)
        cy, cx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        centres = np.repeat(np.stack([cx.ravel(), cy.ravel()], axis=1), len(pairs), axis=0)
        boxes.append(np.concatenate([centres, np.tile(pairs, (h * w, 1))], axis=1))
    return np.concatenate(boxes).astype(np.float32)


def anchors_json(graph: Graph, anchors: AnchorSpec, resolution: int) -> bytes:
    boxes = default_boxes(graph, anchors)
    document = {
        "output": anchors.output,
        "format": FORMAT,
        "input_size": [resolution, resolution],
        "generator": {
            "kind": "ssd",
            "min_ratio": anchors.min_ratio,
            "max_ratio": anchors.max_ratio,
            "aspect_ratios": list(anchors.aspect_ratios),
            "levels": [{"height": h, "width": w, "anchors_per_location": a} for h, w, a in levels(graph, anchors)],
        },
        "count": len(boxes),
        "boxes": [[float(v) for v in row] for row in boxes],
    }
    return (json.dumps(document) + "\n").encode()
