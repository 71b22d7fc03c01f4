"""Bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction", §4.2, in its empirical form): rounding a layer's weights to int8 moves the mean of its
output by E[(W_q − W)·x] per output channel. Per value that is noise; summed over a 1×1
convolution's hundreds of inputs it is a shift every later layer receives, which no per-value
rounding bound sees, and on ImageNet-trained MobileNetV2 it costs more of fp32's decisions than
activation rounding does.

Measured on calibration data as the int8 network computes it: each layer is fed the int8 network's
own values (corrected upstream already), and the shift, in steps of the layer's bias scale, is taken
off its int32 bias. The fp32 graph is untouched; the corrections are recorded with the artifact, so
`mnc verify` rebuilds the same int8 graph without the calibration data."""

from __future__ import annotations

import numpy as np

from mnc.ir.graph import Graph
from mnc.ir.node import ChannelQuantized, Node, QParams
from mnc.ir.ops import OPS
from mnc.quant.interpreter import FakeQuantInterpreter
from mnc.quant.rules import has_int8_weights
from mnc.quant.scheme import INT32_MAX
from mnc.reproducible import stable

SAMPLES = 32  # of the calibration data: the means settle well before (benchmarks/int8_accuracy.py)


def bias_corrections(quantized: Graph, data: np.ndarray) -> dict[str, list[int]]:
    """Per layer with int8 weights and a bias: how many steps of its bias scale to add to its int32
    bias. Runs the int8 network once over `data` (all of it at once: a layer's correction needs the
    mean over every sample before the next layer can run). Leaves `quantized` as it was."""
    run = _Correcting(quantized.copy())
    run.run({quantized.inputs[0]: np.asarray(data, dtype=np.float64)})
    return run.corrections


class _Correcting(FakeQuantInterpreter):
    """The fake-quant reference, each layer's bias corrected on its own inputs before it runs."""

    def __init__(self, graph: Graph):
        super().__init__(graph)
        self.corrections: dict[str, list[int]] = {}

    def run_node(self, name: str, node: Node, xs: list[np.ndarray]) -> np.ndarray:
        q = node.qparams
        if q is not None and has_int8_weights(node.op) and q.bias is not None:
            self.corrections[name] = _steps(node, xs).tolist()
            node.qparams = corrected(q, self.corrections[name])
        return super().run_node(name, node, xs)


def _steps(node, xs: list[np.ndarray]) -> np.ndarray:
    """−E[(W_q − W)·x] per output channel, in steps of the bias scale (before the activation)."""
    q = node.qparams
    error = q.weight.dequantized() - np.asarray(node.params["weight"], dtype=np.float64)
    linear = dict(node.attrs, fused_act=None)
    shifted = np.asarray(OPS[node.op].run(linear, {"weight": error}, xs), dtype=np.float64)
    mean = shifted.mean(axis=tuple(a for a in range(shifted.ndim) if a != 1))
    # Kept to 16 significant bits, so the steps do not depend on the machine's BLAS kernel.
    return np.round(-stable(mean) / q.bias.scale).astype(np.int64)


def corrected(q: QParams, steps: list[int]) -> QParams:
    """q with `steps` added to its int32 bias (held within int32: a bias that far out is already
    beyond what its layer's outputs can show)."""
    bias = np.clip(q.bias.q.astype(np.int64) + np.asarray(steps, dtype=np.int64), -INT32_MAX, INT32_MAX)
    return QParams(q.output, q.weight, ChannelQuantized(bias.astype(np.int32), q.bias.scale))
