"""mnc's executor of saved Core ML ML Programs, for hosts without Core ML (Linux CI).

It reads the written .mlpackage back (the model spec and the weight file, not mnc's IR) and runs
the MIL operations it contains with numpy, rounding every value the program types as fp16 to
fp16, as the program computes. An operation it does not know is an error, never skipped.
Real Core ML may accumulate differently inside an op (the Neural Engine computes in fp16
throughout); on macOS it is held to the measured fp16 tolerance (mnc/verification/metrics.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnc.backends.coreml_mil import DTYPES, model_folder, proto, read_blob, read_package
from mnc.ir import activations, kernels
from mnc.ir.roundoff import float16_rounded


class ExecutorError(Exception):
    """The package cannot be executed as written: unknown op, missing value, bad attribute."""


_DTYPES = {  # MIL proto DataType enum names → numpy (values quantize writes are held as uint8/int8)
    "FLOAT16": np.float16,
    "FLOAT32": np.float32,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "BOOL": np.bool_,
}


_MIL_TYPES = {proto_name: name for name, (_, proto_name) in DTYPES.items()}


class CoreMLProgram:
    def __init__(self, package: str | Path):
        self.package = Path(package)
        self.spec = read_package(self.package)
        MIL_pb2 = proto().MIL_pb2

        if not self.spec.HasField("mlProgram"):
            raise ExecutorError("the package does not hold an ML Program")
        function = self.spec.mlProgram.functions["main"]
        block = function.block_specializations[function.opset]
        self.inputs = [i.name for i in function.inputs]
        self.operations = list(block.operations)
        self.outputs = list(block.outputs)
        self._dtype_name = MIL_pb2.DataType.Name
        self._blobs: dict[Path, bytes] = {}  # each weight file's bytes
        self.constants = {}
        for op in self.operations:
            if op.type == "constexpr_affine_dequantize":  # int8 weights, dequantised when loaded
                a = {k: self._value(v) for k, v in op.attributes.items() if k != "name"}
                self.constants[op.outputs[0].name] = _affine_dequantize(
                    a["quantized_data"], a["scale"], a["zero_point"], int(a["axis"])
                )
            if op.type == "const":
                value = self._value(op.attributes["val"])
                # fp16 constants are held widened to float32: exact, and done once instead of per use.
                if isinstance(value, np.ndarray) and value.dtype == np.float16:
                    value = value.astype(np.float32)
                self.constants[op.outputs[0].name] = value

    # ---- values -------------------------------------------------------------------

    def argument(self, argument):
        """An op argument: a reference to a named value, or a value written inline."""
        return self.constants[argument.name] if argument.name else self._value(argument.value)

    def _value(self, value):
        if value.type.HasField("listType"):
            return [self._value(v) for v in value.immediateValue.list.values]
        tensor_type = value.type.tensorType
        dtype_name = self._dtype_name(tensor_type.dataType)
        shape = [d.constant.size for d in tensor_type.dimensions]
        if value.HasField("blobFileValue"):
            return self._blob(value.blobFileValue, dtype_name).reshape(shape)
        tensor = value.immediateValue.tensor
        kind = tensor.WhichOneof("value")
        if kind == "strings":
            items = list(tensor.strings.values)
            return items[0] if not shape and len(items) == 1 else items
        if kind == "bytes":
            array = np.frombuffer(tensor.bytes.values, dtype=_DTYPES[dtype_name])
        else:
            array = np.asarray(list(getattr(tensor, kind).values), dtype=_DTYPES.get(dtype_name, np.float32))
        return array.reshape(shape) if shape else array.reshape(())

    def _blob(self, blob, dtype_name: str) -> np.ndarray:
        path = Path(blob.fileName.replace("@model_path", str(model_folder(self.package))))
        if path not in self._blobs:
            if not path.exists():
                raise ExecutorError(f"weight file {blob.fileName} is missing from the package")
            self._blobs[path] = path.read_bytes()
        dtype = _MIL_TYPES.get(dtype_name)
        if dtype is None:
            raise ExecutorError(f"weights of type {dtype_name} are not supported by mnc's Core ML executor")
        try:
            return read_blob(self._blobs[path], blob.offset, dtype)
        except ValueError as exc:
            raise ExecutorError(f"{blob.fileName}: {exc}") from None

    # ---- execution ------------------------------------------------------------------

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, object]:
        """Run the program on one sample; returns every named value (outputs included). A value
        beyond float16's range becomes infinite, as on a device; verification reports where."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, object]:
        env: dict[str, object] = dict(self.constants)
        for name in self.inputs:
            if name not in feeds:
                raise ExecutorError(f"no value for program input '{name}'")
            env[name] = np.asarray(feeds[name], dtype=np.float32)
        for op in self.operations:
            if op.type in ("const", "constexpr_affine_dequantize"):
                continue
            kernel = _KERNELS.get(op.type)
            if kernel is None:
                raise ExecutorError(
                    f"operation '{op.type}' ({op.outputs[0].name}) is not supported by mnc's Core ML executor"
                )
            args = {}
            for key, binding in op.inputs.items():
                values = []
                for argument in binding.arguments:
                    if argument.name:
                        if argument.name not in env:
                            raise ExecutorError(
                                f"'{op.type}' ({op.outputs[0].name}) reads '{argument.name}', "
                                "which nothing in the program defines"
                            )
                        values.append(env[argument.name])
                    else:
                        values.append(self._value(argument.value))
                args[key] = values[0] if len(values) == 1 else values
            results = kernel(args)
            results = results if isinstance(results, tuple) else (results,)
            for out, result in zip(op.outputs, results):
                env[out.name] = self._typed(result, out)
        missing = [o for o in self.outputs if o not in env]
        if missing:
            raise ExecutorError(f"program outputs {missing} are never computed")
        return env

    def _typed(self, result, out):
        """Round to the type the program declares for this value (fp16 emulation happens here).
        fp16 values are kept as float32 holding fp16-rounded numbers: the same values, widened once."""
        if not isinstance(result, np.ndarray):
            return result
        tensor_type = out.type.tensorType if out.type.HasField("tensorType") else None
        if tensor_type is None:
            return result
        dtype = _DTYPES.get(self._dtype_name(tensor_type.dataType))
        if dtype == np.float16:
            return float16_rounded(result)
        return result.astype(dtype, copy=False) if dtype is not None else result


def _f(x) -> np.ndarray:
    """Compute in float32 (fp16 values are held widened); the result is rounded back by _typed."""
    return np.asarray(x, dtype=np.float32)


def _conv(a):
    if str(a.get("pad_type", "custom")) != "custom":
        raise ExecutorError(f"conv pad_type '{a['pad_type']}' is not supported by mnc's Core ML executor")
    dilations = [int(d) for d in np.ravel(a.get("dilations", [1, 1]))]
    top, bottom, left, right = (int(v) for v in np.ravel(a["pad"]))
    x = _f(a["x"])[None] if np.ndim(a["x"]) == 3 else _f(a["x"])
    bias = _f(a["bias"]) if "bias" in a else None
    return kernels.conv2d(
        x,
        _f(a["weight"]),
        bias,
        [int(s) for s in np.ravel(a["strides"])],
        (top, left, bottom, right),
        int(a.get("groups", 1)),
        dilations,
    )


def _batch_norm(a):
    return kernels.batchnorm(
        _f(a["x"]),
        _f(a.get("gamma", 1.0)),
        _f(a.get("beta", 0.0)),
        _f(a["mean"]),
        _f(a["variance"]),
        float(a.get("epsilon", 1e-5)),
    )


def _linear(a):
    y = _f(a["x"]) @ _f(a["weight"]).T
    return y + _f(a["bias"]) if "bias" in a else y


def _reduce_mean(a):
    axes = tuple(int(v) for v in np.ravel(a["axes"]))
    return _f(a["x"]).mean(axis=axes, keepdims=bool(a.get("keep_dims", False)))


def _avg_pool(a):
    if str(a.get("pad_type", "valid")) != "valid":
        raise ExecutorError(f"avg_pool pad_type '{a['pad_type']}' is not supported by mnc's Core ML executor")
    kernel, strides = ([int(v) for v in np.ravel(a[k])] for k in ("kernel_sizes", "strides"))
    return kernels.avgpool(_f(a["x"]), kernel, strides)


def _resize_bilinear(a):
    # MIL's UNALIGN_CORNERS: the input sampled at min(in − 1, max(0, (i + 0.5)·in/out − 0.5)).
    if str(a.get("sampling_mode", "DEFAULT")) != "UNALIGN_CORNERS":
        raise ExecutorError(f"resize_bilinear sampling_mode '{a.get('sampling_mode', 'DEFAULT')}' is not supported")
    size = (int(a["target_size_height"]), int(a["target_size_width"]))
    return kernels.resize_bilinear(_f(a["x"]), size).astype(np.float32)


def _concat(a):
    values = a["values"] if isinstance(a["values"], list) else [a["values"]]
    return np.concatenate([_f(v) for v in values], axis=int(a["axis"]))


def _reshape(a):
    return _f(a["x"]).reshape([int(v) for v in np.ravel(a["shape"])])


def _cast(a):
    dtype = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32}.get(str(a["dtype"]))
    if dtype is None:
        raise ExecutorError(f"cast to '{a['dtype']}' is not supported by mnc's Core ML executor")
    return np.asarray(a["x"]).astype(dtype)  # rounded here; _typed then keeps fp16 widened


def _affine_dequantize(data, scale, zero_point, axis: int) -> np.ndarray:
    shape = [1] * np.ndim(data)

    def along(v):
        v = np.asarray(v, dtype=np.float32)
        if v.ndim == 0:
            return v
        s = list(shape)
        s[axis] = -1
        return v.reshape(s)

    return ((np.asarray(data, dtype=np.float32) - along(zero_point)) * along(scale)).astype(np.float32)


def _quantize(a):
    dtype = {"uint8": (0, 255), "int8": (-128, 127)}.get(str(a["output_dtype"]))
    if dtype is None:
        raise ExecutorError(f"quantize to '{a['output_dtype']}' is not supported by mnc's Core ML executor")
    if "axis" in a:
        raise ExecutorError("per-axis activation quantisation is not supported by mnc's Core ML executor")
    q = np.round(_f(a["input"]) / _f(a["scale"])) + _f(a.get("zero_point", 0))  # round half to even
    return np.clip(q, *dtype)


def _dequantize(a):
    if "axis" in a:
        raise ExecutorError("per-axis dequantisation is not supported by mnc's Core ML executor")
    return (_f(a["input"]) - _f(a.get("zero_point", 0))) * _f(a["scale"])


def _classify(a):
    probabilities = np.asarray(a["probabilities"]).reshape(-1)
    classes = a["classes"] if isinstance(a["classes"], list) else list(np.ravel(a["classes"]))
    if len(classes) != probabilities.size:
        raise ExecutorError(f"classify has {len(classes)} labels for {probabilities.size} scores")
    return classes[int(np.argmax(probabilities))], dict(zip(classes, probabilities.tolist()))


def _gelu(a):
    if str(a.get("mode", "EXACT")) != "EXACT":  # the erf form is what mnc writes
        raise ExecutorError(f"gelu mode {a['mode']!r} is not supported by mnc's Core ML executor")
    return activations.ACTIVATIONS["gelu"].function(np.asarray(a["x"], np.float64)).astype(np.float32)


_KERNELS = {
    "cast": _cast,
    "conv": _conv,
    "batch_norm": _batch_norm,
    "linear": _linear,
    # MIL's relu, relu6, sigmoid and silu are the IR activations of the same names, evaluated in float64
    # and rounded to float32, as an accurate kernel computes them (mnc's sigmoid, 0.5·(1 + tanh(x/2)),
    # computed in float32 errs by 3e-8 where it nears 0, which silu multiplies by |x|).
    **{
        fn: (lambda f: lambda a: f(np.asarray(a["x"], np.float64)).astype(np.float32))(
            activations.ACTIVATIONS[fn].function
        )
        for fn in ("relu", "relu6", "sigmoid", "silu")
    },
    "gelu": _gelu,
    "sigmoid_hard": lambda a: np.clip(_f(a.get("alpha", 0.2)) * _f(a["x"]) + _f(a.get("beta", 0.5)), 0, 1),
    "clip": lambda a: np.clip(_f(a["x"]), _f(a["alpha"]), _f(a["beta"])),
    "add": lambda a: _f(a["x"]) + _f(a["y"]),
    "sub": lambda a: _f(a["x"]) - _f(a["y"]),
    "mul": lambda a: _f(a["x"]) * _f(a["y"]),
    "reduce_mean": _reduce_mean,
    "reshape": _reshape,
    "avg_pool": _avg_pool,
    "resize_bilinear": _resize_bilinear,
    "concat": _concat,
    "transpose": lambda a: np.transpose(np.asarray(a["x"]), [int(v) for v in np.ravel(a["perm"])]),
    "softmax": lambda a: kernels.softmax(_f(a["x"]), axis=int(a.get("axis", -1))),
    "identity": lambda a: np.asarray(a["x"]),
    "classify": _classify,
    "quantize": _quantize,
    "dequantize": _dequantize,
}


def run_coreml(package: Path, feeds: dict[str, np.ndarray], output: str | None = None) -> list[np.ndarray]:
    """Run the saved package sample by sample (Core ML models take a batch of one) and stack each
    tensor the network computes: the program's outputs in order, or for classifiers the scores
    `classify` reads. Each keeps its own shape (less the batch of one)."""
    program = CoreMLProgram(package)
    (input_name,) = program.inputs
    (batch,) = feeds.values()
    classify = next((op for op in program.operations if op.type == "classify"), None)
    targets = [classify.inputs["probabilities"].arguments[0].name] if classify is not None else program.outputs
    results: list[list[np.ndarray]] = [[] for _ in targets]
    for sample in batch:
        env = program.run({input_name: sample[None]})
        for i, target in enumerate(targets):
            value = np.asarray(env[target], dtype=np.float32)
            results[i].append(value.reshape(-1) if classify is not None else value.reshape(value.shape[1:]))
    return [np.stack(r) for r in results]
