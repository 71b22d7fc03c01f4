#!/usr/bin/env python3
"""Make the Keras parity fixtures under tests/fixtures/keras/ (see DEVELOPERS.md).

Needs TensorFlow (never a dependency of mnc; the tests only read the files written here):

    python -m venv .peer-tf && .peer-tf/bin/pip install tensorflow-cpu==2.21.0
    .peer-tf/bin/python tools/make_keras_fixtures.py

For each model it writes
- `<name>.keras` (Keras 3's zip: config.json + model.weights.h5) and `<name>.h5` (the legacy
  HDF5 file), the same seeded model: a Keras application backbone with random weights whose
  batch-norm statistics are non-trivial (random moving mean/variance, gamma, beta), as a user's
  fine-tuned classifier is built: `include_top=False` backbone, GlobalAveragePooling2D, Dropout,
  Dense(classes, softmax). The application whose own top is kept is also written
  (`<name>_top.keras`);
- `<name>_io.npz`: a fixed input batch (NHWC, as Keras takes it: preprocessed to [-1, 1]; for
  MobileNetV3, which rescales itself, pixels in [0, 255]) and Keras's output (inference mode, float32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow import keras

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "keras"
CLASSES = 5
BATCH = 4


def randomise(model: keras.Model, seed: int, pixels: bool = False) -> None:
    """Random batch-norm scale and shift, and moving statistics measured layer by layer on seeded
    image-like inputs (as training would leave them), so that every layer's output depends on the
    input: with made-up statistics, activations die and all inputs give one output."""
    rng = np.random.default_rng(seed)
    backbone = next((layer for layer in model.layers if isinstance(layer, keras.Model)), model)
    shape = backbone.input.shape[1:]
    data = rng.uniform(0, 255 if pixels else 1, (16, *shape)).astype("float32")
    if not pixels:
        data = 2 * data - 1
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            x = keras.Model(backbone.input, layer.input)(data, training=False).numpy()
            axes = tuple(range(x.ndim - 1))
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, x.shape[-1]).astype("float32"),
                    rng.normal(0.0, 0.25, x.shape[-1]).astype("float32"),
                    x.mean(axis=axes).astype("float32"),
                    x.var(axis=axes).astype("float32"),
                ]
            )
    for layer in _layers(model):
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)) and layer.name in (
            "breeds",
            "predictions",
            "conv_preds",
            "logits",
        ):
            kernel, bias = layer.get_weights()
            fan_in = int(np.prod(kernel.shape[:-1]))
            layer.set_weights(
                [
                    rng.normal(0.0, 3 * fan_in**-0.5, kernel.shape).astype("float32"),
                    rng.normal(0.0, 0.1, bias.shape).astype("float32"),
                ]
            )


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def classifier(backbone_fn, name: str, resolution: int, alpha: float, seed: int, pixels: bool = False) -> keras.Model:
    keras.utils.set_random_seed(seed)
    backbone = backbone_fn(input_shape=(resolution, resolution, 3), alpha=alpha, include_top=False, weights=None)
    inputs = keras.Input((resolution, resolution, 3))
    x = backbone(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="breeds")(x)
    model = keras.Model(inputs, outputs, name=name)
    randomise(model, seed, pixels)
    return model


def save(model: keras.Model, name: str, resolution: int, seed: int, h5: bool = True, pixels: bool = False) -> None:
    model.save(OUT / f"{name}.keras")
    if h5:
        model.save(OUT / f"{name}.h5")
    x = np.random.default_rng(seed + 1).uniform(-1, 1, (BATCH, resolution, resolution, 3)).astype("float32")
    if pixels:  # MobileNetV3 rescales [0, 255] itself (its Rescaling layer)
        x = np.round((x + 1) * 127.5).astype("float32")
    y = model(x, training=False).numpy()
    np.savez(OUT / f"{name}_io.npz", input=x, output=y)
    spread = float(np.abs(y - y.mean(axis=0)).max())
    assert spread > 0.05, f"{name}: the outputs hardly depend on the input ({spread:.2g})"
    print(f"{name}: {model.count_params():,} params; output {y.shape}, max spread across inputs {spread:.3f}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    save(
        classifier(keras.applications.MobileNetV2, "keras_mobilenet_v2_a0.35", 96, 0.35, 1),
        "keras_mobilenet_v2_a0.35",
        96,
        1,
    )
    save(classifier(keras.applications.MobileNet, "keras_mobilenet_a0.25", 96, 0.25, 2), "keras_mobilenet_a0.25", 96, 2)
    keras.utils.set_random_seed(3)
    top = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=7)
    randomise(top, 3)
    save(top, "keras_mobilenet_v2_a0.35_top", 64, 3, h5=False)
    keras.utils.set_random_seed(4)
    v3 = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), alpha=0.5, weights=None, classes=CLASSES)
    randomise(v3, 4, pixels=True)
    save(v3, "keras_mobilenet_v3_small_a0.5_top", 96, 4, h5=False, pixels=True)
    name = "keras_mobilenet_v3_small_a0.5"  # include_top=False, a head of one's own
    save(
        classifier(keras.applications.MobileNetV3Small, name, 96, 0.5, 5, pixels=True),
        name,
        96,
        5,
        h5=False,
        pixels=True,
    )
    for fn, alpha in ((keras.applications.MobileNetV3Large, 1.0), (keras.applications.MobileNetV3Large, 0.75)):
        model = fn(input_shape=(224, 224, 3), alpha=alpha, weights=None, classes=1000)
        print(f"{model.name} α {alpha}: {model.count_params():,} params (Keras's count)")


if __name__ == "__main__":
    main()
