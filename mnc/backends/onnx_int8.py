"""ONNX's int8 form: the weight ranges ONNX Runtime's integer kernels cannot saturate with, and the
checks of an int8 model beyond its outputs (saturation excluded by a bound on the weights; every
layer against the fake-quant reference, read from an instrumented twin of the model). The `.ort`
target shares them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from mnc.backends.target import Check, dequantized, joined, layer_by_layer
from mnc.ir.graph import Graph
from mnc.quant.scheme import ACTIVATION_LEVELS, weight_qmax

# ONNX Runtime's u8×s8 matrix kernels on x86 without VNNI (AVX2: VPMADDUBSW) add two products into
# int16, which saturates unless 255·(|w1| + |w2|) ≤ 32767, i.e. every |w| ≤ 64: those weights take 7
# bits ([-63, 63]), so the result and the verdict do not depend on the CPU. Its depthwise kernel
# widens both sides to 16 bits and accumulates every product in int32 (MlasConvSymDepthwiseKernelAvx2
# for these symmetric weights, MlasConvDepthwiseKernelAvx2 on its other path),
# so depthwise weights keep all 8 bits, where a trained network needs them most: on ImageNet-trained
# MobileNetV2, 7-bit weights everywhere lowered the logits' mean cosine with fp32 from 0.987 to 0.945,
# 8-bit depthwise weights brought it back to 0.978 (benchmarks/int8_accuracy.py). Storing the weights
# as uint8 (u8×u8 kernels, which cannot saturate) keeps 8 bits everywhere but ran 2.3× slower than
# u8×s8 on an AVX-512 VNNI host, slower than fp32.
INT16_MAX = 2**15 - 1
SATURATION_FREE_MAX_WEIGHT = INT16_MAX // (2 * ACTIVATION_LEVELS)
WEIGHT_BITS = max(b for b in range(2, 9) if weight_qmax(b) <= SATURATION_FREE_MAX_WEIGHT)
DEPTHWISE_WEIGHT_BITS = 8
QUANTIZATION = (
    f"QDQ: activations uint8 per-tensor affine; weights int8 per-output-channel symmetric, "
    f"[-{weight_qmax(DEPTHWISE_WEIGHT_BITS)}, {weight_qmax(DEPTHWISE_WEIGHT_BITS)}] in depthwise convolutions "
    f"and [-{weight_qmax(WEIGHT_BITS)}, {weight_qmax(WEIGHT_BITS)}] ({WEIGHT_BITS}-bit) elsewhere, so ONNX "
    "Runtime's u8s8 kernels cannot saturate on AVX2 hosts without VNNI; bias int32 with scale "
    "input_scale·weight_scale"
)
# ONNX Runtime requantises each integer result in float32 (accumulator × (input·weight/output scale),
# rounded half to even); the reference rounds the exact value. They differ by one step where a value
# lies within float32's precision of a rounding boundary, nowhere else.
LAYER_LSB_BOUND = 1.0
EXECUTOR = "ONNX Runtime (CPUExecutionProvider, all graph optimisations), every uint8 tensor"
LAYER_NOTE = "the instrumented model's output equals the artifact's bit for bit"


def saturation_check(quantized: Graph) -> Check:
    """Every weight that a u8×s8 matrix kernel multiplies (all but depthwise ones) within the bound."""
    largest = max(
        (
            int(np.abs(quantized.node(n).qparams.weight.q.astype(np.int32)).max())
            for n in quantized
            if quantized.node(n).qparams is not None
            and quantized.node(n).qparams.weight is not None
            and not quantized.is_depthwise(n)
        ),
        default=0,
    )
    saturation_free = largest <= SATURATION_FREE_MAX_WEIGHT
    return Check(
        "saturation",
        {
            "largest_weight": largest,
            "bound": SATURATION_FREE_MAX_WEIGHT,
            "verdict": "pass" if saturation_free else "fail",
            "why": f"u8×s8 pair sums stay within int16 when every |weight| ≤ {SATURATION_FREE_MAX_WEIGHT}; "
            "depthwise convolutions accumulate each product in int32",
        },
        saturation_free,
        f"a weight of magnitude {largest} can saturate ONNX Runtime's u8×s8 kernels on x86 hosts "
        f"without VNNI (bound {SATURATION_FREE_MAX_WEIGHT})",
    )


def instrumented(model: onnx.ModelProto, quantized: Graph) -> tuple[onnx.ModelProto, list[str]]:
    """The model with every quantised tensor (`NODE.q`, uint8) as an output after its own: what
    ONNX Runtime's integer kernels computed, layer by layer."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    names = [n for n in quantized.topo() if quantized.node(n).qparams is not None]
    twin.graph.output.extend(helper.make_tensor_value_info(f"{n}.q", TensorProto.UINT8, None) for n in names)
    return twin, names


def layers_check(
    quantized: Graph, names: list[str], results: list[np.ndarray], output: np.ndarray, executor: str = EXECUTOR
) -> Check:
    """The layer-by-layer check from an instrumented twin's results. The twin is the artifact with
    more outputs; its output must equal the artifact's bit for bit, so its tensors are the ones the
    artifact computes (ONNX Runtime fused the same kernels)."""
    outputs = len(quantized.outputs)
    twin_output, tensors = joined(results[:outputs]), results[outputs:]
    if not np.array_equal(twin_output, output):
        return Check(
            "layers",
            {"verdict": "fail", "error": "the instrumented run's output differs from the artifact's"},
            False,
            "the artifact, run with its layers' outputs exposed, computes a different output: its layers "
            "cannot be checked",
        )
    values = dict(zip(names, tensors))

    def real(name: str) -> np.ndarray:
        q = quantized.node(name).qparams.output
        return dequantized(values[name], q.scale, q.zero_point)

    return layer_by_layer(quantized, real, executor, LAYER_LSB_BOUND, LAYER_NOTE)
