"""The ORT format's bytes made canonical: ONNX Runtime's flatbuffer read whole and written again in
one order and one layout, so the same model gives the same file on every install and machine.

What ONNX Runtime writes depends on more than the model. Its kernel-type resolver comes from a hash
map (absl's, seeded from a memory address): its vectors are sorted by key, but their entries are
created in the map's order, so where each one lies in the file, and so the offsets that point to
them, change with the address layout of the converting process, and that layout changes with the
path of the install. Other lists (initialisers, value infos, node attributes, opsets, metadata) it
writes in the order of `std::unordered_map`s, which the C++ standard leaves to the library: the same
from run to run here, not necessarily in another platform's build.

Every table is read with the schema below (ONNX Runtime's `ort.fbs`, as its generated Python
classes in `onnxruntime.tools.ort_format_model` have it) and built again depth first, in the order
of the fields, with one builder: the lists that ONNX Runtime loads into maps (`_SORTED`) are sorted
by their key; every other list keeps its order (a node's inputs, the graph's nodes and outputs, a
tensor's dimensions...). Nothing is dropped: a field this schema does not know fails the rewrite
(`NotCanonical`), and the rewritten file must read back as the same tree.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import flatbuffers
from flatbuffers import number_types as N

FILE_IDENTIFIER = b"ORTM"


class NotCanonical(ValueError):
    """The file holds something this schema does not know: it cannot be rewritten without loss."""


class Field(NamedTuple):
    name: str
    kind: str  # scalar, string, table, union_type, union, strings, tables, numbers, structs, raw
    of: object = None  # scalar flags, table name, element flags, union members, struct size
    default: object = 0


def _scalar(name, flags, default=0):
    return Field(name, "scalar", flags, default)


def _string(name):
    return Field(name, "string")


def _table(name, of):
    return Field(name, "table", of)


def _tables(name, of):
    return Field(name, "tables", of)


def _strings(name):
    return Field(name, "strings")


def _numbers(name, flags):
    return Field(name, "numbers", flags)


_TYPE_INFO_VALUES = {1: "TensorTypeAndShape", 2: "SequenceType", 3: "MapType"}
DEPRECATED = None  # a slot the schema keeps for a deprecated field: it must be absent

# Each table's fields in slot order (ort.fbs).
SCHEMA: dict[str, list[Field | None]] = {
    "InferenceSession": [
        _string("ort_version"),
        _table("model", "Model"),
        DEPRECATED,  # session_state
        _table("kernel_type_str_resolver", "KernelTypeStrResolver"),
    ],
    "Model": [
        _scalar("ir_version", N.Int64Flags),
        _tables("opset_import", "OperatorSetId"),
        _string("producer_name"),
        _string("producer_version"),
        _string("domain"),
        _scalar("model_version", N.Int64Flags),
        _string("doc_string"),
        _table("graph", "Graph"),
        _string("graph_doc_string"),
        _tables("metadata_props", "StringStringEntry"),
    ],
    "OperatorSetId": [_string("domain"), _scalar("version", N.Int64Flags)],
    "StringStringEntry": [_string("key"), _string("value")],
    "Graph": [
        _tables("initializers", "Tensor"),
        _tables("node_args", "ValueInfo"),
        _tables("nodes", "Node"),
        _scalar("max_node_index", N.Uint32Flags),
        _tables("node_edges", "NodeEdge"),
        _strings("inputs"),
        _strings("outputs"),
        _tables("sparse_initializers", "SparseTensor"),
        _table("runtime_optimizations", "RuntimeOptimizations"),
    ],
    "Tensor": [
        _string("name"),
        _string("doc_string"),
        _numbers("dims", N.Int64Flags),
        _scalar("data_type", N.Int32Flags),
        Field("raw_data", "raw"),
        _strings("string_data"),
        _scalar("external_data_offset", N.Int64Flags, -1),
    ],
    "SparseTensor": [_table("values", "Tensor"), _table("indices", "Tensor"), _numbers("dims", N.Int64Flags)],
    "ValueInfo": [_string("name"), _string("doc_string"), _table("type", "TypeInfo")],
    "TypeInfo": [
        _string("denotation"),
        Field("value_type", "union_type", N.Uint8Flags),
        Field("value", "union", _TYPE_INFO_VALUES),
    ],
    "TensorTypeAndShape": [_scalar("elem_type", N.Int32Flags), _table("shape", "Shape")],
    "SequenceType": [_table("elem_type", "TypeInfo")],
    "MapType": [_scalar("key_type", N.Int32Flags), _table("value_type", "TypeInfo")],
    "Shape": [_tables("dim", "Dimension")],
    "Dimension": [_table("value", "DimensionValue"), _string("denotation")],
    "DimensionValue": [
        _scalar("dim_type", N.Int8Flags),
        _scalar("dim_value", N.Int64Flags),
        _string("dim_param"),
    ],
    "Node": [
        _string("name"),
        _string("doc_string"),
        _string("domain"),
        _scalar("since_version", N.Int32Flags),
        _scalar("index", N.Uint32Flags),
        _string("op_type"),
        _scalar("type", N.Int32Flags),
        _string("execution_provider_type"),
        _strings("inputs"),
        _strings("outputs"),
        _tables("attributes", "Attribute"),
        _numbers("input_arg_counts", N.Int32Flags),
        _strings("implicit_inputs"),
    ],
    "Attribute": [
        _string("name"),
        _string("doc_string"),
        _scalar("type", N.Int32Flags),
        _scalar("f", N.Float32Flags, 0.0),
        _scalar("i", N.Int64Flags),
        _string("s"),
        _table("t", "Tensor"),
        _table("g", "Graph"),
        _numbers("floats", N.Float32Flags),
        _numbers("ints", N.Int64Flags),
        _strings("strings"),
        _tables("tensors", "Tensor"),
        _tables("graphs", "Graph"),
    ],
    "NodeEdge": [
        _scalar("node_index", N.Uint32Flags),
        Field("input_edges", "structs", 12),  # EdgeEnd: node_index uint32, src_arg_index int32, dst_arg_index int32
        Field("output_edges", "structs", 12),
    ],
    "RuntimeOptimizations": [_tables("records", "RuntimeOptimizationRecordContainerEntry")],
    "RuntimeOptimizationRecordContainerEntry": [
        _string("optimizer_name"),
        _tables("runtime_optimization_records", "RuntimeOptimizationRecord"),
    ],
    "RuntimeOptimizationRecord": [
        _string("action_id"),
        _table("nodes_to_optimize_indices", "NodesToOptimizeIndices"),
        DEPRECATED,  # produced_nodes
        _strings("produced_op_ids"),
    ],
    "NodesToOptimizeIndices": [
        _numbers("node_indices", N.Uint32Flags),
        _scalar("num_inputs", N.Uint32Flags),
        _scalar("num_outputs", N.Uint32Flags),
        _scalar("has_variadic_input", N.BoolFlags, False),
        _scalar("has_variadic_output", N.BoolFlags, False),
        _scalar("num_variadic_inputs", N.Uint32Flags),
        _scalar("num_variadic_outputs", N.Uint32Flags),
    ],
    "KernelTypeStrResolver": [_tables("op_kernel_type_str_args", "OpIdKernelTypeStrArgsEntry")],
    "OpIdKernelTypeStrArgsEntry": [_string("op_id"), _tables("kernel_type_str_args", "KernelTypeStrArgsEntry")],
    "KernelTypeStrArgsEntry": [_string("kernel_type_str"), _tables("args", "ArgTypeAndIndex")],
    "ArgTypeAndIndex": [_scalar("arg_type", N.Int8Flags), _scalar("index", N.Uint32Flags)],
}

# The lists ONNX Runtime loads into maps keyed by a name (so their order means nothing to it), and
# that key: each is written sorted by it, bytewise (flatbuffers' order of string keys; the
# resolver's two lists are declared `(key)` in the schema and ONNX Runtime already sorts them).
_SORTED: dict[tuple[str, str], object] = {
    ("Model", "opset_import"): lambda t: t.get("domain", b""),
    ("Model", "metadata_props"): lambda t: t.get("key", b""),
    ("Graph", "initializers"): lambda t: t.get("name", b""),
    ("Graph", "node_args"): lambda t: t.get("name", b""),
    ("Graph", "sparse_initializers"): lambda t: t.get("values", {}).get("name", b""),
    ("Node", "attributes"): lambda t: t.get("name", b""),
    ("RuntimeOptimizations", "records"): lambda t: t.get("optimizer_name", b""),
    ("KernelTypeStrResolver", "op_kernel_type_str_args"): lambda t: t.get("op_id", b""),
    ("OpIdKernelTypeStrArgsEntry", "kernel_type_str_args"): lambda t: t.get("kernel_type_str", b""),
}

# A tensor's raw data starts on a boundary of its element's size, and never less than 4 (where
# ONNX Runtime's own writer puts it), so a runtime that uses the file's bytes in place reads
# aligned values. TensorProto data types of 8-byte elements (and complex64's pairs of floats):
_RAW_ALIGNMENT = {7: 8, 11: 8, 13: 8, 14: 8, 15: 8}


def read(data: bytes, *, whole: bool = True) -> dict:
    """The .ort file as a tree: each table a dict of its present fields (strings as bytes, lists of
    numbers and structs as their little-endian bytes), in the order the file has them. `whole`: a
    field this schema does not know raises NotCanonical; else it is left out (enough to read what is
    known, as the operator config does)."""
    data = bytes(data)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise NotCanonical("not an ORT format model (no 'ORTM' identifier)")
    root = flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, data, 0)
    return _read_table(data, root, "InferenceSession", whole)


_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U16 = struct.Struct("<H").unpack_from


def _read_table(buf: bytes, pos: int, name: str, whole: bool) -> dict:
    # flatbuffers' own Table reader, unrolled: its per-field calls were most of a .ort build's rewrite.
    fields = SCHEMA[name]
    vtable = pos - _I32(buf, pos)[0]
    if not 0 <= vtable <= len(buf) - 4:  # (struct reads a negative position from the end)
        raise NotCanonical(f"{name} at {pos} has its vtable outside the file")
    vtable_size = _U16(buf, vtable)[0]
    offsets = [_U16(buf, vtable + at)[0] for at in range(4, vtable_size, 2)]
    if whole and any(offsets[len(fields) :]):
        slot = len(fields) + next(i for i, o in enumerate(offsets[len(fields) :]) if o)
        raise NotCanonical(f"{name} has a field (slot {slot}) that this schema does not know")
    out: dict = {}
    union_type = 0
    for slot, field in enumerate(fields):
        o = offsets[slot] if slot < len(offsets) else 0
        if field is DEPRECATED:
            if o and whole:
                raise NotCanonical(f"{name} has its deprecated field (slot {slot})")
            continue
        if not o:
            continue
        at = pos + o
        kind = field.kind
        if kind in ("scalar", "union_type"):
            value = field.of.py_type(field.of.packer_type.unpack_from(buf, at)[0])
            if kind == "union_type":
                union_type = value
            if value != field.default:
                out[field.name] = value
        elif kind == "string":
            out[field.name] = _string_at(buf, at)
        elif kind == "table":
            out[field.name] = _read_table(buf, at + _U32(buf, at)[0], field.of, whole)
        elif kind == "union":
            if union_type not in field.of:
                if not whole:
                    continue
                raise NotCanonical(f"{name}.{field.name} is of a union type this schema does not know ({union_type})")
            out[field.name] = _read_table(buf, at + _U32(buf, at)[0], field.of[union_type], whole)
        else:
            vector = at + _U32(buf, at)[0]
            start, count = vector + 4, _U32(buf, vector)[0]
            if kind == "strings":
                out[field.name] = [_string_at(buf, start + 4 * i) for i in range(count)]
            elif kind == "tables":
                out[field.name] = [
                    _read_table(buf, start + 4 * i + _U32(buf, start + 4 * i)[0], field.of, whole) for i in range(count)
                ]
            else:
                size = field.of.bytewidth if kind == "numbers" else field.of if kind == "structs" else 1
                out[field.name] = buf[start : start + size * count]
    return out


def _string_at(buf: bytes, at: int) -> bytes:
    at += _U32(buf, at)[0]
    return buf[at + 4 : at + 4 + _U32(buf, at)[0]]


def canonical_tree(tree: dict, name: str = "InferenceSession") -> dict:
    """The tree with every map-like list sorted by its key (a new tree; the input is unchanged)."""
    out = {}
    for field in SCHEMA[name]:
        if field is DEPRECATED or field.name not in tree:
            continue
        value = tree[field.name]
        if field.kind == "table":
            value = canonical_tree(value, field.of)
        elif field.kind == "union":
            value = canonical_tree(value, field.of[tree["value_type"]])
        elif field.kind == "tables":
            value = [canonical_tree(t, field.of) for t in value]
            key = _SORTED.get((name, field.name))
            if key is not None:
                value = sorted(value, key=key)
        out[field.name] = value
    return out


def write(tree: dict, size_hint: int = 1 << 16) -> bytes:
    """The tree as an ORT format file, laid out the same way for the same tree (whatever the size
    hint: the buffer the builder starts with, which it doubles, copying, while it is too small)."""
    builder = flatbuffers.Builder(size_hint)
    root = _write_table(builder, tree, "InferenceSession")
    builder.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _size(field: Field) -> int:
    if field.kind in ("scalar", "union_type"):
        return field.of.bytewidth
    return N.UOffsetTFlags.bytewidth


def _write_table(builder: flatbuffers.Builder, tree: dict, name: str) -> int:
    fields = SCHEMA[name]
    # Children first (a table is built after everything it points to), in field order.
    offsets: dict[str, int] = {}
    for field in fields:
        if field is DEPRECATED or field.name not in tree or field.kind in ("scalar", "union_type"):
            continue
        value = tree[field.name]
        kind = field.kind
        if kind == "string":
            offsets[field.name] = builder.CreateSharedString(value)
        elif kind == "table":
            offsets[field.name] = _write_table(builder, value, field.of)
        elif kind == "union":
            offsets[field.name] = _write_table(builder, value, field.of[tree["value_type"]])
        elif kind == "strings":
            offsets[field.name] = _offsets_vector(builder, [builder.CreateSharedString(s) for s in value])
        elif kind == "tables":
            offsets[field.name] = _offsets_vector(builder, [_write_table(builder, t, field.of) for t in value])
        else:
            if kind == "numbers":
                size, alignment = field.of.bytewidth, field.of.bytewidth
            elif kind == "structs":
                size, alignment = field.of, 4
            else:  # a tensor's raw data
                size, alignment = 1, _RAW_ALIGNMENT.get(tree.get("data_type", 0), 4)
            offsets[field.name] = _bytes_vector(builder, value, size, alignment)
    # The table: its fields placed widest first, then by slot (the order flatc's Create functions use).
    builder.StartObject(len(fields))
    present = [(slot, f) for slot, f in enumerate(fields) if f is not DEPRECATED and f.name in tree]
    for slot, field in sorted(present, key=lambda sf: (-_size(sf[1]), sf[0])):
        if field.kind in ("scalar", "union_type"):
            builder.PrependSlot(field.of, slot, tree[field.name], field.default)
        else:
            builder.PrependUOffsetTRelativeSlot(slot, offsets[field.name], 0)
    return builder.EndObject()


def _offsets_vector(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(N.UOffsetTFlags.bytewidth, len(offsets), N.UOffsetTFlags.bytewidth)
    for off in reversed(offsets):
        builder.PrependUOffsetTRelative(off)
    return builder.EndVector()


def _bytes_vector(builder: flatbuffers.Builder, payload: bytes, size: int, alignment: int) -> int:
    builder.StartVector(size, len(payload) // size, alignment)
    builder.head -= len(payload)
    builder.Bytes[builder.head : builder.head + len(payload)] = payload
    return builder.EndVector()


def canonical(data: bytes) -> bytes:
    """The ORT format file `data` in its canonical order and layout. Raises NotCanonical where the
    file holds what the schema does not know; the result reads back as the same tree."""
    tree = canonical_tree(read(data))
    out = write(tree, size_hint=len(data) + (1 << 16))
    if not _same(read(out), tree):  # the writer's own check: nothing lost, nothing reordered
        raise RuntimeError("the canonical ORT file does not read back as the tree it was written from")
    return out


def required_operators(tree: dict) -> dict[str, dict[int, set[str]]]:
    """{domain: {opset: operator types}} of every node, subgraphs included, as ONNX Runtime's
    reduced-build tools count them (a node's domain, "ai.onnx" for the default one, and the opset
    version it was resolved at)."""
    found: dict[str, dict[int, set[str]]] = {}

    def visit(graph: dict) -> None:
        for node in graph.get("nodes", []):
            domain = node.get("domain", b"").decode() or "ai.onnx"
            found.setdefault(domain, {}).setdefault(node.get("since_version", 0), set()).add(node["op_type"].decode())
            for attribute in node.get("attributes", []):
                for sub in ([attribute["g"]] if "g" in attribute else []) + attribute.get("graphs", []):
                    visit(sub)

    visit(tree["model"]["graph"])
    return found


def _same(a, b) -> bool:
    """Trees equal, a float scalar by its bits (a NaN attribute equals itself)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return isinstance(b, float) and struct.pack("<f", a) == struct.pack("<f", b)
    return a == b
