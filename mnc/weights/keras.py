"""Keras models without TensorFlow: `.keras` (Keras 3: a zip of config.json and model.weights.h5)
and legacy `.h5` files, read with zipfile and h5py.

What comes out is what every other weights reader gives (mnc/weights/files.py): tensors in
PyTorch's layout, named `<layer>/<variable>` after the Keras layer (kernel, depthwise_kernel,
bias, gamma, beta, moving_mean, moving_variance), in the model's own layer order, which the
`keras` layout follows. Also the model's config (for `mnc import`) and the conventions its
layers compute with (batch-norm ε, TensorFlow's SAME padding), which a build applies.

Keras 3's weight file does not name layers: it stores each layer's variables under a path made
from its class (`layers/functional/layers/batch_normalization_3/vars/0`), numbered in the order
of the config's layer list within each model. That order is rebuilt here from config.json.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from mnc.errors import InputError, Loc
from mnc.ir.activations import ACTIVATIONS

# Each weighted layer's variables in Keras's order, by class; BatchNormalization's depend on its
# `scale` and `center` flags.
_VARIABLES = {
    "Conv2D": ("kernel", "bias"),
    "DepthwiseConv2D": ("depthwise_kernel", "bias"),
    "Dense": ("kernel", "bias"),
}
_BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")
MODEL_CLASSES = ("Functional", "Sequential", "Model")


@dataclass
class KerasModel:
    config: dict  # the model's config: class_name and config, as Keras writes it
    tensors: dict[str, np.ndarray]  # "<layer>/<variable>", PyTorch layout, layer order
    conventions: dict = field(default_factory=dict)  # settings the layers compute with


def read_keras(path: str, raw: bytes, loc: Loc) -> KerasModel:
    try:
        import h5py
    except ImportError:  # a dependency; only a broken install lacks it
        raise InputError("reading Keras files needs h5py (pip install h5py)", loc) from None
    try:
        if zipfile.is_zipfile(io.BytesIO(raw)):
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                config = json.loads(archive.read("config.json"))
                with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
                    tensors = _keras3_tensors(config, weights, loc)
        else:
            with h5py.File(io.BytesIO(raw), "r") as h5:
                if "model_config" not in h5.attrs:
                    raise InputError("an HDF5 file without a Keras model config (model.save() writes one)", loc)
                config = json.loads(h5.attrs["model_config"])
                tensors = _legacy_tensors(config, h5["model_weights"] if "model_weights" in h5 else h5, loc)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"not a readable Keras model file: {type(exc).__name__}: {exc}", loc) from None
    return KerasModel(config, tensors, _conventions(config, loc))


def layers(config: dict):
    """Every layer of a model config, nested models' layers in place of the model, in order."""
    for layer in config["config"]["layers"]:
        if layer["class_name"] in MODEL_CLASSES:
            yield from layers(layer)
        else:
            yield layer


def _variables(layer: dict) -> tuple[str, ...]:
    c = layer["config"]
    if layer["class_name"] == "BatchNormalization":
        return tuple(v for v in _BN_VARIABLES if c.get({"gamma": "scale", "beta": "center"}.get(v, ""), True))
    names = _VARIABLES.get(layer["class_name"], ())
    return names if c.get("use_bias", True) else names[:1]


def _keras3_tensors(config: dict, weights, loc: Loc) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}

    def walk(model: dict, group: str) -> None:
        seen: dict[str, int] = {}
        for layer in model["config"]["layers"]:
            base = _snake(layer["class_name"])
            count = seen.get(base, 0)
            seen[base] = count + 1
            path = f"{group}/{base}" + (f"_{count}" if count else "")
            if layer["class_name"] in MODEL_CLASSES:
                walk(layer, f"{path}/layers")
                continue
            names = _variables(layer)
            if not names:
                continue
            found = weights.get(f"{path}/vars")
            if found is None or len(found) != len(names):
                raise InputError(
                    f"the weights of layer '{layer['config']['name']}' ({layer['class_name']}) are not where Keras "
                    f"puts them ({path}/vars, {len(names)} variables)",
                    loc,
                )
            for i, name in enumerate(names):
                tensors[f"{layer['config']['name']}/{name}"] = _torch_layout(name, np.asarray(found[str(i)]))

    walk(config, "layers")
    return tensors


def _legacy_tensors(config: dict, weights, loc: Loc) -> dict[str, np.ndarray]:
    """Legacy HDF5: a group per layer (nested models' layers inside theirs), datasets named
    '<layer>/<variable>:0' or '<layer>/<variable>'."""
    stored: dict[str, dict[str, np.ndarray]] = {}

    def collect(group) -> None:
        for item in group.values():
            if hasattr(item, "shape"):
                *_, layer, variable = item.name.split("/")
                stored.setdefault(layer, {})[variable.split(":")[0]] = np.asarray(item)
            else:
                collect(item)

    collect(weights)
    tensors: dict[str, np.ndarray] = {}
    for layer in layers(config):
        name = layer["config"]["name"]
        for variable in _variables(layer):
            # Keras 3 calls a depthwise kernel 'kernel' in these files; Keras 2 'depthwise_kernel'.
            candidates = [variable] + (["kernel"] if variable == "depthwise_kernel" else [])
            found = next((stored[name][c] for c in candidates if c in stored.get(name, {})), None)
            if found is None:
                raise InputError(f"no weights '{name}/{variable}' for layer '{name}' ({layer['class_name']})", loc)
            tensors[f"{name}/{variable}"] = _torch_layout(variable, found)
    return tensors


def _torch_layout(variable: str, array: np.ndarray) -> np.ndarray:
    """Keras's kernels as PyTorch holds them: Conv2D (H, W, I, O) → (O, I, H, W); depthwise
    (H, W, C, M) → (C·M, 1, H, W); Dense (I, O) → (O, I)."""
    if variable == "kernel" and array.ndim == 4:
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    if variable == "depthwise_kernel":
        h, w, c, m = array.shape
        return np.ascontiguousarray(array.reshape(h, w, c * m).transpose(2, 0, 1)[:, None])
    if variable == "kernel" and array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return array


def _snake(name: str) -> str:
    """Keras's to_snake_case: 'BatchNormalization' → 'batch_normalization', 'Conv2D' → 'conv2d'."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _conventions(config: dict, loc: Loc) -> dict:
    """What the model computes with that a spec states as settings: one batch-norm ε, TensorFlow's
    SAME padding (Keras's 'same', and the explicit ZeroPadding2D + 'valid' its MobileNets use
    before a stride-2 depthwise convolution, which is the same at even sizes), and the input
    normalisation of its preprocess_input."""
    eps = {layer["config"]["epsilon"] for layer in layers(config) if layer["class_name"] == "BatchNormalization"}
    if len(eps) > 1:
        raise InputError(f"the model's batch-norm layers use several ε ({', '.join(map(str, sorted(eps)))})", loc)
    # Keras's MobileNet and MobileNetV2 take preprocess_input's [-1, 1]: pixel/255 normalised by 0.5, 0.5.
    # MobileNetV3 scales [0, 255] itself (a Rescaling layer, x·scale + offset): the same normalisation
    # as mean = −offset·std, std = 1/(255·scale), which is what the spec states.
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    rescalings = [layer for layer in layers(config) if layer["class_name"] == "Rescaling"]
    if len(rescalings) > 1:
        raise InputError(f"the model rescales its input {len(rescalings)} times; mnc maps one Rescaling", loc)
    if rescalings:
        c = rescalings[0]["config"]
        scale, offset = (
            np.asarray(c.get(k, d), dtype=np.float64).ravel() for k, d in (("scale", 1.0), ("offset", 0.0))
        )
        if scale.size != 1 or offset.size != 1 or scale[0] <= 0:
            raise InputError(f"layer '{c['name']}' (Rescaling): mnc maps one positive scale and one offset", loc)
        s = 1.0 / (255.0 * float(scale[0]))
        mean, std = (-float(offset[0]) * s,) * 3, (s,) * 3
    conventions = {"padding": "same", "mean": mean, "std": std}
    if eps:
        conventions["batchnorm_eps"] = float(eps.pop())
    activations = {_activation(layer) for layer in layers(config)} - {None}
    unknown = sorted(a for a in activations if a not in ACTIVATIONS)
    if unknown:
        raise InputError(f"the model uses activation(s) mnc does not have: {', '.join(unknown)}", loc)
    if len(activations) == 1:  # the spec's `activation` (Keras's MobileNets use ReLU6 where the V1 paper has ReLU)
        conventions["activation"] = activations.pop()
    return conventions


def _activation(layer: dict) -> str | None:
    """The hidden-layer activation a layer applies (not a classifier's softmax), in mnc's words."""
    c = layer["config"]
    if layer["class_name"] == "ReLU":
        limit = c.get("max_value")
        return "relu" if limit is None else "relu6" if float(limit) == 6.0 else f"relu (max {limit})"
    name = c.get("activation") if layer["class_name"] in ("Activation", "Conv2D", "DepthwiseConv2D") else None
    return (
        None if name in (None, "linear", "softmax") else {"hard_swish": "hswish", "hard_silu": "hswish"}.get(name, name)
    )
