"""`mnc import`: a trained model in, a spec and weights out. The spec reads like the bundled ones
(one row per stage) and can be edited like any spec; the weights are in mnc's own layout.

timm state dicts of MobileNetV1, V2 and V3 (mobilenetv1_100, mobilenetv2_050, mobilenetv3_large_100 …):
a state dict carries no config, so each bundled family is tried at each of timm's widths until one
takes every tensor (names, kinds and shapes); the classes come from the classifier, the resolution is
the spec's, and timm's conventions (symmetric padding, ε 1e-5, ReLU6 for V1/V2) become settings.

Keras models (.keras, .h5) built on Keras's MobileNet or MobileNetV2 application, with or without
its top, or with the usual classifier head of one's own (GlobalAveragePooling2D, Dropout, Dense);
and Keras's MobileNetV3Small/Large, with their own top or a head of one's own (written from the
timm_v3 specs, which build V3 as Keras does; without Keras's top, the head's 1×1 conv row goes).
The architecture is read from the model's config: the backbone's family from its layer names,
α from its widths (the α at which the family's spec takes every tensor of the file), the
resolution from its input shape, the classes and the final softmax from the classifier; Keras's
conventions (SAME padding, batch-norm ε, ReLU6, inputs in [-1, 1]) become the spec's settings.
Anything else is refused, naming the layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnc.errors import InputError, Loc
from mnc.frontend import bundled_spec, load_spec_text
from mnc.io import write_atomic
from mnc.ir.cost import graph_cost
from mnc.pipeline.build import build
from mnc.weights.files import read_weights
from mnc.weights.keras import layers
from mnc.weights.layouts import KERAS, TIMM, choose_layout
from mnc.weights.save import weights_bytes


@dataclass(frozen=True)
class Family:
    name: str  # in words
    spec: str  # the bundled spec it is written from
    marker: str  # a layer name only this family's Keras application has
    alphas: tuple[float, ...]  # the α Keras offers
    softmax_row: str  # the table row of a final softmax, in the spec's columns
    hidden_head: int = 0  # layers the spec's head has between pooling and the classifier


FAMILIES = (
    Family(
        "MobileNetV2",
        "v2.mnet",
        "block_1_expand",
        (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        "| 1 × 1 × k      | softmax               | - | -    | 1 | - |",
    ),
    Family(
        "MobileNet (V1)",
        "v1.mnet",
        "conv_dw_1",
        (0.25, 0.5, 0.75, 1.0),
        "| 1² × k         | softmax      | -    | 1 | - |",
    ),
    # Keras builds MobileNetV3 as timm does (fixed stem and head, expansions as ratios of the scaled
    # input), so the timm_v3 specs are its tables; its own top adds a 1×1 conv after pooling.
    Family(
        "MobileNetV3-Large",
        "timm_v3_large.mnet",
        "expanded_conv_14_project",
        (0.35, 0.5, 0.75, 1.0),
        "| 1² × k     | softmax            | -    | -    | -  | -  | - |",
        hidden_head=1,
    ),
    Family(
        "MobileNetV3-Small",
        "timm_v3_small.mnet",
        "expanded_conv_squeeze_excite_conv",  # the first block's squeeze-excite: only Small has it
        (0.35, 0.5, 0.75, 1.0),
        "| 1² × k     | softmax            | -    | -    | -  | -  | - |",
        hidden_head=1,
    ),
)
# timm's MobileNets at the widths timm names them with (mobilenetv2_050 …). Its V3s scale their own
# way below α 1 (a fixed stem and head, expansions as ratios of the scaled input): the timm_v3 specs.
TIMM_FAMILIES = (
    Family("MobileNetV2", "v2.mnet", "", (0.35, 0.5, 0.75, 1.0, 1.4), FAMILIES[0].softmax_row),
    Family("MobileNetV3-Large", "timm_v3_large.mnet", "", (0.75, 1.0), ""),
    Family("MobileNetV3-Small", "timm_v3_small.mnet", "", (0.5, 0.75, 1.0), ""),
    Family("MobileNet (V1)", "v1.mnet", "", (1.0, 1.25), FAMILIES[1].softmax_row),
)
# Layers of a head (or of the glue around a backbone) that compute nothing an inference needs
# beyond what the spec's `avgpool global | fc | softmax` rows say.
HEAD_LAYERS = {"InputLayer", "GlobalAveragePooling2D", "Dropout", "Flatten", "Reshape", "Activation", "Dense", "Conv2D"}
BACKBONE_LAYERS = {
    "InputLayer",
    "Conv2D",
    "DepthwiseConv2D",
    "BatchNormalization",
    "ReLU",
    "ZeroPadding2D",
    "Add",
    # MobileNetV3: squeeze-and-excite (pooling, a product), its input scaling, and the hard sigmoid
    # Keras writes as ReLU(6)(x + 3) · 1/6 (symbolic Add and Multiply of keras.ops, checked below).
    "GlobalAveragePooling2D",
    "Multiply",
    "Activation",
    "Rescaling",
}
# The only constants Keras's hard sigmoid adds and multiplies by.
HARD_SIGMOID_CONSTANTS = {"Add": 3.0, "Multiply": 1.0 / 6.0}


@dataclass(frozen=True)
class Imported:
    spec_path: Path
    weights_path: Path
    family: str
    alpha: float
    resolution: int
    classes: int
    params: int


def import_model(checkpoint: str | Path, out_dir: str | Path = ".", name: str | None = None) -> Imported:
    path = Path(checkpoint)
    loc = Loc.file(str(path))
    weights = read_weights(path)
    layout = choose_layout(set(weights.tensors), None, loc)
    if layout is KERAS:
        config = weights.model_config
        families = [_family(config, loc)]
        classes, softmax, hidden = _head(config, loc, families[0].hidden_head)
        resolution, source = _resolution(config), "Keras"
    elif layout is TIMM:  # a state dict says neither resolution nor family: each family is tried
        families, softmax, resolution, source = list(TIMM_FAMILIES), False, None, "timm"
        hidden = None
        classes = layout.classes(weights.tensors)
    else:
        raise InputError(
            f"mnc import reads Keras models (.keras, .h5) and timm state dicts; these weights are in the "
            f"'{layout.name}' layout: give them to mnc compile with --weights and the spec they fit",
            loc,
        )
    name = name or re.sub(r"\W+", "_", path.stem)
    conventions = {**layout.conventions(set(weights.tensors)), **weights.conventions}
    for family in families:
        for alpha in family.alphas:
            text = _spec_text(family, source, name, path.name, alpha, resolution, classes, softmax, conventions, hidden)
            spec = load_spec_text(text, str(Path(out_dir) / f"{name}.mnet"))
            try:
                built = build(spec, weights=weights, weights_layout=layout.name)  # read once, tried often
            except InputError:  # names, kinds or shapes that do not fit this family at this α
                continue
            break
        else:
            continue
        break
    else:
        tried = "; ".join(f"{f.name} α {', '.join(map(str, f.alphas))}" for f in families)
        raise InputError(
            f"the model's layers and widths fit none of {source}'s MobileNets as mnc writes them ({tried})", loc
        )
    out = Path(out_dir)
    spec_path, weights_path = out / f"{name}.mnet", out / f"{name}.safetensors"
    meta = {"imported_from": path.name, "spec_sha256": spec.sha256}
    write_atomic(weights_path, weights_bytes(built.graph, meta))
    write_atomic(spec_path, text.encode())
    params = graph_cost(built.graph).params  # counted as `mnc summary` counts them
    return Imported(spec_path, weights_path, f"{source} {family.name}", alpha, built.config.resolution, classes, params)


def _family(config: dict, loc: Loc) -> Family:
    names = {layer["config"]["name"] for layer in layers(config)}
    found = [f for f in FAMILIES if f.marker in names]
    if len(found) != 1:
        raise InputError(
            "mnc import reads models built on Keras's MobileNet, MobileNetV2 or MobileNetV3 application; this "
            f"model has none's layers (such as {', '.join(f.marker for f in FAMILIES)})",
            loc,
        )
    for layer in layers(config):
        kind, layer_name = layer["class_name"], layer["config"]["name"]
        if kind not in BACKBONE_LAYERS | HEAD_LAYERS:
            raise InputError(f"layer '{layer_name}' ({kind}): mnc import cannot map a {kind} layer", loc)
        _check_constants(layer, loc)
    return found[0]


def _check_constants(layer: dict, loc: Loc) -> None:
    """A keras.ops Add or Multiply must be MobileNetV3's hard sigmoid's (its Rescaling becomes the
    spec's normalisation: mnc/weights/keras.py)."""
    kind, c = layer["class_name"], layer["config"]
    if layer.get("module", "").startswith("keras.src.ops") and kind in HARD_SIGMOID_CONSTANTS:
        constants = [
            a for node in layer.get("inbound_nodes", []) for a in node.get("args", []) if not isinstance(a, dict)
        ]
        if constants != [HARD_SIGMOID_CONSTANTS[kind]] and not np.allclose(constants, [HARD_SIGMOID_CONSTANTS[kind]]):
            raise InputError(
                f"layer '{c['name']}' ({kind} of {constants}): mnc import maps the hard sigmoid of Keras's "
                "MobileNetV3, relu6(x + 3) · 1/6, and no other arithmetic",
                loc,
            )


def _head(config: dict, loc: Loc, hidden: int = 0) -> tuple[int, bool, int]:
    """The classes, whether the model ends in a softmax, and how many of the family's `hidden` head
    layers it has (MobileNetV3's 1×1 conv after pooling, which Keras's own top has and a head of
    one's own does not), from the layers after the backbone's last pooling, then one classifier
    (Dense, or the 1×1 Conv2D of Keras's own tops)."""
    all_layers = list(layers(config))
    pools = [i for i, layer in enumerate(all_layers) if layer["class_name"] == "GlobalAveragePooling2D"]
    if not pools:
        raise InputError("the model has no GlobalAveragePooling2D: mnc import needs a classifier head", loc)
    head = all_layers[pools[-1] + 1 :]
    classifiers = [layer for layer in head if layer["class_name"] in ("Dense", "Conv2D")]
    if not 1 <= len(classifiers) <= hidden + 1:
        names = ", ".join(f"'{c['config']['name']}'" for c in classifiers) or "none"
        if hidden:
            raise InputError(
                f"the head has {len(classifiers)} layers with weights ({names}); mnc import maps MobileNetV3's own "
                "top (a 1×1 conv, then the classifier) or one classifier of one's own",
                loc,
            )
        raise InputError(f"the head has {len(classifiers)} classifier layers ({names}); mnc import maps one", loc)
    classifier = classifiers[-1]
    c = classifier["config"]
    classes = int(c.get("units") or c.get("filters"))
    after = head[head.index(classifier) + 1 :]
    activations = [c.get("activation", "linear")] + [
        layer["config"]["activation"] for layer in after if layer["class_name"] == "Activation"
    ]
    unknown = [a for a in activations if a not in ("linear", "softmax")]
    if unknown:
        raise InputError(
            f"layer '{c['name']}': a classifier with activation '{unknown[0]}' (mnc import maps linear or softmax)",
            loc,
        )
    return classes, "softmax" in activations, len(classifiers) - 1


def _resolution(config: dict) -> int | None:
    for layer in layers(config):
        if layer["class_name"] == "InputLayer":
            shape = layer["config"].get("batch_shape") or layer["config"].get("batch_input_shape")
            if shape and shape[1] and shape[1] == shape[2]:
                return int(shape[1])
    return None


def _spec_text(
    family: Family,
    source: str,
    name: str,
    file: str,
    alpha: float,
    resolution: int | None,
    classes: int,
    softmax: bool,
    conventions: dict,
    hidden: int | None = None,
) -> str:
    """The family's bundled spec with this model's settings, and its softmax row as the model has it;
    without the head's hidden layer (the `fc, fixed` row) where the model has none (`hidden` 0)."""
    text = bundled_spec(family.spec).read_text()
    header = (
        f"# Imported by `mnc import` from {file}: {source}'s {family.name}, α {alpha:g}, {classes} classes.\n"
        f"# The table is the {family.name} of specs/{family.spec}; the settings are the model's.\n\n"
    )
    settings = {
        "name": name,
        "description": f'"{source} {family.name} α {alpha:g}, {classes} classes (imported from {file})"',
        "alpha": f"{alpha:g}",
        "classes": str(classes),
        "resolution": str(resolution) if resolution else None,
        "rho": None,
        **{k: _value(v) for k, v in conventions.items()},
    }
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    first_row = next(i for i, line in enumerate(lines) if line.startswith("|"))
    out, written = [], set()
    for line in lines[:first_row]:
        key = line.split("=", 1)[0].strip() if "=" in line else None
        if key in settings:
            written.add(key)
            line = None if settings[key] is None else f"{key:<16}= {settings[key]}"
        if line is not None:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    out += [f"{k:<16}= {v}" for k, v in settings.items() if k not in written and v is not None]
    out.append("")
    carried = None  # the input cell of a dropped head row, which the next row takes
    for line in lines[first_row:]:
        if re.match(r"\|[^|]*\|\s*softmax\b", line):
            continue
        if hidden == 0 and family.hidden_head and re.match(r"\|[^|]*\|\s*fc, fixed\b", line):
            carried = line.split("|")[1]
            continue
        if carried is not None and line.startswith("|"):
            line, carried = "|" + carried + "|" + line.split("|", 2)[2], None
        out.append(line)
    if softmax:
        out.append(family.softmax_row)
    return header + "\n".join(out).lstrip("\n") + "\n"


def _value(value) -> str:
    if isinstance(value, tuple):
        return ", ".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
