"""A MIL program written directly: the part of coremltools' MIL builder and exporter that mnc's
Core ML lowering uses, without importing coremltools (1–2 s of a build: its import, the builder's
type inference, its pass pipeline).

`Program` takes the builder's calls (`p.conv(x=…, weight=…, name=…)`) and records what coremltools
would: every argument that is not a variable becomes a `const` op named `{op}_{argument}_{n}`, the
op's optional inputs it leaves out get their default values the same way, and the result is typed by
the op's shape rule. `serialise` writes the program as coremltools' exporter does (large constants
in the weight file, small ones inline), so a package written here is the one coremltools writes from
the same calls, byte for byte (tests/test_coreml_writer.py builds both). The protobuf classes are
coremltools' own generated modules (coremltools/proto), loaded without the rest of the package.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import struct
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

# MIL's element types: mnc's name → (numpy type, the proto's DataType name).
DTYPES = {
    "fp16": (np.float16, "FLOAT16"),
    "fp32": (np.float32, "FLOAT32"),
    "int8": (np.int8, "INT8"),
    "uint8": (np.uint8, "UINT8"),
    "int32": (np.int32, "INT32"),
    "bool": (np.bool_, "BOOL"),
    "string": (np.str_, "STRING"),
}
_BY_NUMPY = {np.dtype(t): name for name, (t, _) in DTYPES.items() if name != "string"}
_IN_BYTES = ("fp16", "int8", "uint8")  # immediate values MIL reads from the `bytes` field
# The weight file's element type codes (MIL storage format) and the types that go there.
_BLOB_TYPES = {"fp16": 1, "fp32": 2, "uint8": 3, "int8": 4}
_BLOB_MIN_SIZE = 10  # smaller constants are written inline, as coremltools does
# Each deployment target's model specification version (Core ML 5 to 8).
SPECIFICATION_VERSIONS = {
    **{"iOS15": 6, "iOS16": 7, "iOS17": 8, "iOS18": 9},
    **{"macOS12": 6, "macOS13": 7, "macOS14": 8, "macOS15": 9},
}
OPSETS = {6: "CoreML5", 7: "CoreML6", 8: "CoreML7", 9: "CoreML8"}
WEIGHTS_FILE = "@model_path/weights/weight.bin"
_MODEL_FOLDER = ("Data", "com.apple.CoreML")  # within a package: model.mlmodel and weights/


def proto():
    """coremltools' generated protobuf modules (Model_pb2, MIL_pb2, FeatureTypes_pb2), imported from
    its `proto` folder as a package of their own: importing `coremltools.proto` would run
    coremltools' __init__, which imports its converters (about a second)."""
    name = "mnc._coremltools_proto"
    if name not in sys.modules:
        spec = importlib.util.find_spec("coremltools")
        package = types.ModuleType(name)
        package.__path__ = [str(Path(spec.origin).parent / "proto")]
        sys.modules[name] = package
    return types.SimpleNamespace(
        **{m: importlib.import_module(f"{name}.{m}") for m in ("Model_pb2", "MIL_pb2", "FeatureTypes_pb2")}
    )


@dataclass(eq=False)
class Var:
    name: str
    dtype: str  # a key of DTYPES, or "dict" / "list" for the classifier's values
    shape: tuple = ()
    val: object = None  # a constant's value


@dataclass(eq=False)
class Operation:
    type: str
    name: str
    inputs: dict  # argument → Var or list of Vars
    outputs: list
    literals: tuple = ()  # arguments written inline instead of as a const (classify's classes)


def _const_value(val) -> tuple[np.ndarray | object, str, tuple]:
    """A Python or numpy value as MIL types it: Python ints are int32, floats fp32 (coremltools'
    rules), numpy values keep their type."""
    if isinstance(val, str):
        return val, "string", ()
    if isinstance(val, bool):
        return np.bool_(val), "bool", ()
    if isinstance(val, int):
        return np.int32(val), "int32", ()
    if isinstance(val, float):
        return np.float32(val), "fp32", ()
    array = np.asarray(val)
    if array.dtype == np.int64:
        array = array.astype(np.int32)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype.kind == "U":
        return [str(v) for v in array.ravel()], "list", (array.size,)
    if isinstance(val, np.generic):
        return val, _BY_NUMPY[array.dtype], ()
    return array, _BY_NUMPY[array.dtype], array.shape


# ---- the ops: default inputs (coremltools' `default_inputs`, in its order) and result types ----------


def _same(inputs):
    x = inputs["x"]
    return x.dtype, x.shape


def _broadcast(inputs):
    return inputs["x"].dtype, tuple(np.broadcast_shapes(inputs["x"].shape, inputs["y"].shape))


def _spatial(inputs) -> tuple[int, int]:
    return tuple(inputs["x"].shape[2:])


def _conv(inputs):
    x, w = inputs["x"], inputs["weight"]
    top, bottom, left, right = (int(v) for v in inputs["pad"].val)
    (sh, sw), (dh, dw) = inputs["strides"].val, inputs["dilations"].val
    (h, wd), (kh, kw) = _spatial(inputs), w.shape[2:]
    out_h = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    return x.dtype, (x.shape[0], w.shape[0], out_h, out_w)


def _avg_pool(inputs):
    x = inputs["x"]
    (kh, kw), (sh, sw) = inputs["kernel_sizes"].val, inputs["strides"].val
    h, w = _spatial(inputs)
    return x.dtype, (*x.shape[:2], (h - kh) // sh + 1, (w - kw) // sw + 1)


def _reduce_mean(inputs):
    x = inputs["x"]
    axes = {int(a) % len(x.shape) for a in inputs["axes"].val}
    keep = bool(inputs["keep_dims"].val)
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes)
    return x.dtype, shape


def _reshape(inputs):
    x, shape = inputs["x"], [int(d) for d in inputs["shape"].val]
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = int(np.prod(x.shape)) // known
    return x.dtype, tuple(shape)


def _concat(inputs):
    values, axis = inputs["values"], int(inputs["axis"].val)
    shape = list(values[0].shape)
    shape[axis] = sum(v.shape[axis] for v in values)
    return values[0].dtype, tuple(shape)


def _classify(inputs):
    return "string", ()


@dataclass(frozen=True)
class OpSchema:
    result: Callable  # inputs → (dtype, shape)
    defaults: Callable = lambda inputs: {}  # inputs → the optional inputs' default values, in order


OPS = {
    **{unary: OpSchema(_same) for unary in ("relu", "relu6", "sigmoid", "silu", "sigmoid_hard", "identity")},
    "gelu": OpSchema(_same, lambda i: {"mode": "EXACT"}),
    "add": OpSchema(_broadcast),
    "mul": OpSchema(_broadcast),
    "cast": OpSchema(lambda i: (i["dtype"].val, i["x"].shape)),
    "conv": OpSchema(
        _conv,
        lambda i: {"strides": [1, 1], "pad_type": "valid", "pad": [0, 0, 0, 0], "dilations": [1, 1], "groups": 1},
    ),
    "linear": OpSchema(
        lambda i: (i["x"].dtype, (*i["x"].shape[:-1], i["weight"].shape[0])),
        lambda i: {"bias": np.zeros(i["weight"].shape[0], DTYPES[i["weight"].dtype][0])},
    ),
    "batch_norm": OpSchema(_same, lambda i: {"epsilon": 1e-5}),
    "reduce_mean": OpSchema(_reduce_mean, lambda i: {"keep_dims": False}),
    "reshape": OpSchema(_reshape),
    "softmax": OpSchema(_same, lambda i: {"axis": -1}),
    "avg_pool": OpSchema(
        _avg_pool,
        lambda i: {"strides": [1, 1], "pad": [0, 0, 0, 0], "ceil_mode": False, "exclude_padding_from_average": False},
    ),
    "resize_bilinear": OpSchema(
        lambda i: (
            i["x"].dtype,
            (*i["x"].shape[:2], int(i["target_size_height"].val), int(i["target_size_width"].val)),
        ),
        lambda i: {"sampling_mode": "DEFAULT"},
    ),
    "concat": OpSchema(_concat, lambda i: {"interleave": False}),
    "transpose": OpSchema(lambda i: (i["x"].dtype, tuple(i["x"].shape[int(p)] for p in i["perm"].val))),
    "quantize": OpSchema(lambda i: (i["output_dtype"].val, i["input"].shape)),
    "dequantize": OpSchema(lambda i: (i["scale"].dtype, i["input"].shape)),
    "constexpr_affine_dequantize": OpSchema(lambda i: (i["scale"].dtype, i["quantized_data"].shape)),
    "classify": OpSchema(_classify),
}


class Program:
    """One function, `main`, being built: its input, its operations in order, its outputs."""

    def __init__(self, deployment_target: str):
        self.specification_version = SPECIFICATION_VERSIONS[deployment_target]
        self.inputs: list[Var] = []
        self.operations: list[Operation] = []
        self.outputs: list[Var] = []
        self._counts: dict[str, int] = {}

    @property
    def opset(self) -> str:
        return OPSETS[self.specification_version]

    def input(self, name: str, shape: tuple, dtype: str = "fp32") -> Var:
        var = Var(name, dtype, tuple(shape))
        self.inputs.append(var)
        return var

    def _free_name(self, base: str) -> str:
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        return f"{base}_{n}"

    def const(self, val, name: str | None = None) -> Var:
        value, dtype, shape = _const_value(val)
        var = Var(name or self._free_name("const"), dtype, shape, value)
        self.operations.append(Operation("const", var.name, {}, [var]))
        return var

    def __getattr__(self, op_type: str):
        if op_type not in OPS:
            raise AttributeError(f"MIL op '{op_type}' is not one mnc writes")
        return lambda **kwargs: self._op(op_type, **kwargs)

    def _as_var(self, value, name: str):
        if isinstance(value, Var):
            return value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Var) for v in value):
            return list(value)
        return self.const(value, self._free_name(name))

    def _op(self, op_type: str, name: str | None = None, **kwargs) -> Var | tuple[Var, ...]:
        name = name or self._free_name(op_type)
        inputs = {k: self._as_var(v, f"{name}_{k}") for k, v in kwargs.items() if v is not None}
        schema = OPS[op_type]
        for k, v in schema.defaults(inputs).items():
            if k not in inputs:
                inputs[k] = self._as_var(v, f"{name}_{k}")
        if op_type == "classify":  # coremltools names its results after the predicted feature
            outputs = [Var("classLabel", "string"), Var("classLabel_probs", "dict")]
            self.operations.append(Operation(op_type, name, inputs, outputs, literals=("classes",)))
            return tuple(outputs)
        dtype, shape = schema.result(inputs)
        out = Var(name, dtype, tuple(int(d) for d in shape))
        self.operations.append(Operation(op_type, name, inputs, [out]))
        return out

    def live_operations(self) -> list[Operation]:
        """The operations the outputs depend on (coremltools' dead-code elimination)."""
        used = {v.name for v in self.outputs}
        live = []
        for op in reversed(self.operations):
            if op.type != "classify" and not any(o.name in used for o in op.outputs):
                continue
            live.append(op)
            for k, value in op.inputs.items():
                if k not in op.literals:
                    used.update(v.name for v in (value if isinstance(value, list) else [value]))
        return live[::-1]


# ---- serialisation ------------------------------------------------------------------------------


class WeightFile:
    """MIL's weight file (weights/weight.bin): a 64-byte header (blob count, version 2), then each
    blob as 64 bytes of metadata (sentinel 0xDEADBEEF, type, size, offset of the data) followed by
    its data, each blob starting at a multiple of 64 bytes. A constant refers to its blob by the metadata's offset."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.size = 64
        self.count = 0

    def add(self, value: np.ndarray, dtype: str) -> int:
        data = np.ascontiguousarray(value).tobytes()
        padding = -self.size % 64  # after the previous blob's data; the file ends with the last one's
        offset = self.size + padding
        self.parts.append(b"\0" * padding)
        self.parts.append(
            struct.pack("<IIQQQ4Q", 0xDEADBEEF, _BLOB_TYPES[dtype], len(data), offset + 64, 0, 0, 0, 0, 0)
        )
        self.parts.append(data)
        self.size = offset + 64 + len(data)
        self.count += 1
        return offset

    def to_bytes(self) -> bytes:
        return struct.pack("<II7Q", self.count, 2, *[0] * 7) + b"".join(self.parts)


@dataclass
class _Serialiser:
    pb: object  # the proto modules
    specification_version: int
    weights: WeightFile = field(default_factory=WeightFile)

    def value_type(self, var: Var):
        t = self.pb.MIL_pb2.ValueType()
        if var.dtype == "dict":  # classify's probabilities: string → fp64
            t.dictionaryType.keyType.CopyFrom(self.tensor_type("string", ()))
            t.dictionaryType.valueType.CopyFrom(self.tensor_type("fp64", ()))
        elif var.dtype == "list":
            t.listType.type.CopyFrom(self.tensor_type("string", ()))
            t.listType.length.constant.size = var.shape[0]
        else:
            t.CopyFrom(self.tensor_type(var.dtype, var.shape))
        return t

    def tensor_type(self, dtype: str, shape: tuple):
        t = self.pb.MIL_pb2.ValueType()
        data_type = "FLOAT64" if dtype == "fp64" else DTYPES[dtype][1]
        t.tensorType.dataType = self.pb.MIL_pb2.DataType.Value(data_type)
        t.tensorType.rank = len(shape)
        for d in shape:
            t.tensorType.dimensions.add().constant.size = int(d)
        return t

    def value(self, var: Var):
        """A constant's value: in the weight file if it is large, else inline."""
        v = self.pb.MIL_pb2.Value()
        v.type.CopyFrom(self.value_type(var))
        val, dtype = var.val, var.dtype
        blob_types = ("fp16", "fp32", "uint8", "int8") + (("int32",) if self.specification_version >= 9 else ())
        if isinstance(val, (np.ndarray, np.generic)) and np.size(val) >= _BLOB_MIN_SIZE and dtype in blob_types:
            v.blobFileValue.fileName = WEIGHTS_FILE
            v.blobFileValue.offset = self.weights.add(np.asarray(val), dtype)
            return v
        tensor = v.immediateValue.tensor
        if dtype == "list":
            for item in val:
                v.immediateValue.list.values.add().CopyFrom(self.value(Var("", "string", (), item)))
        elif dtype == "string":
            tensor.strings.values.append(val.encode("utf-8"))
        elif dtype in _IN_BYTES:
            tensor.bytes.values = np.asarray(val).tobytes()
        elif dtype == "bool":
            tensor.bools.values.extend(bool(b) for b in np.ravel(val))
        elif dtype == "int32":
            tensor.ints.values.extend(int(i) for i in np.ravel(val))
        else:
            tensor.floats.values.extend(float(f) for f in np.ravel(val))
        return v

    def name_attribute(self, name: str):
        return self.value(Var("", "string", (), name))

    def operation(self, op: Operation):
        mil = self.pb.MIL_pb2
        o = mil.Operation(type=op.type)
        o.attributes["name"].CopyFrom(self.name_attribute(op.name))
        if op.type == "const":
            o.attributes["val"].CopyFrom(self.value(op.outputs[0]))
        for k, value in op.inputs.items():
            arguments = o.inputs[k].arguments
            for var in value if isinstance(value, list) else [value]:
                if k in op.literals:
                    arguments.add().value.CopyFrom(self.value(var))
                else:
                    arguments.add().name = var.name
        for out in op.outputs:
            o.outputs.add(name=out.name).type.CopyFrom(self.value_type(out))
        return o

    def constexpr(self, op: Operation):
        """A constexpr op (int8 weights): its constant arguments are attributes (coremltools writes
        the iOS16 op this way for every later target too)."""
        mil = self.pb.MIL_pb2
        o = mil.Operation(type=op.type)
        o.attributes["name"].CopyFrom(self.name_attribute(op.name))
        for k, var in op.inputs.items():
            o.attributes[k].CopyFrom(self.value(var))
        for out in op.outputs:
            o.outputs.add(name=out.name).type.CopyFrom(self.value_type(out))
        return o


def serialise(program: Program, build_info: dict[str, str]):
    """The program as MIL protobuf, and its weight file's bytes."""
    pb = proto()
    s = _Serialiser(pb, program.specification_version)
    operations = program.live_operations()
    # A const read only by constexpr ops (or written inline, as classify's classes) is not written:
    # its value goes where it is read.
    readers: dict[str, list[Operation]] = {}
    for op in operations:
        for k, value in op.inputs.items():
            for var in value if isinstance(value, list) else [value]:
                readers.setdefault(var.name, []).append((op, k))
    block = pb.MIL_pb2.Block(outputs=[v.name for v in program.outputs])
    for op in operations:
        if op.type == "const":
            reading = readers.get(op.name, [])
            if reading and all(r.type.startswith("constexpr_") or k in r.literals for r, k in reading):
                continue
            block.operations.append(s.operation(op))
        elif op.type.startswith("constexpr_"):
            block.operations.append(s.constexpr(op))
        else:
            block.operations.append(s.operation(op))
    function = pb.MIL_pb2.Function(opset=program.opset)
    for var in program.inputs:
        function.inputs.add(name=var.name).type.CopyFrom(s.value_type(var))
    function.block_specializations[program.opset].CopyFrom(block)
    result = pb.MIL_pb2.Program(version=1)
    result.functions["main"].CopyFrom(function)
    info = result.attributes["buildInfo"]
    info.type.dictionaryType.keyType.CopyFrom(s.tensor_type("string", ()))
    info.type.dictionaryType.valueType.CopyFrom(s.tensor_type("string", ()))
    for key, value in build_info.items():
        entry = info.immediateValue.dictionary.values.add()
        entry.key.CopyFrom(s.name_attribute(key))
        entry.value.CopyFrom(s.name_attribute(value))
    return result, s.weights.to_bytes()


# ---- reading a package back ---------------------------------------------------------------------


def read_package(path: Path):
    """The model specification of a saved .mlpackage (found through its manifest) or .mlmodel."""
    path = Path(path)
    if path.is_dir():
        manifest = json.loads((path / "Manifest.json").read_text())
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
        path = path.joinpath(_MODEL_FOLDER[0], root)
    model = proto().Model_pb2.Model()
    model.ParseFromString(path.read_bytes())
    return model


def model_folder(package: Path) -> Path:
    return Path(package).joinpath(*_MODEL_FOLDER)


def read_blob(data: bytes, offset: int, dtype: str) -> np.ndarray:
    """One constant of a weight file (see WeightFile), of MIL type `dtype`."""
    sentinel, code, size, start = struct.unpack_from("<IIQQ", data, offset)
    if sentinel != 0xDEADBEEF or _BLOB_TYPES.get(dtype) != code or start + size > len(data):
        raise ValueError(f"no {dtype} weights at offset {offset} of the weight file")
    return np.frombuffer(data, DTYPES[dtype][0], count=size // np.dtype(DTYPES[dtype][0]).itemsize, offset=start)
