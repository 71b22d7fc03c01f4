"""A TFLite model from the IR: the lowered subgraph, its float outputs under the spec's names, the
serving signature, and mnc's metadata (and the class labels) as metadata buffers."""

from __future__ import annotations

import flatbuffers

from mnc.backends.lowering import walk
from mnc.backends.target import INPUT_NAME, output_names
from mnc.backends.tflite.flatbuffer import Op, Opt, Writer, buffer, make, schema
from mnc.backends.tflite.lowering import LOWERING
from mnc.backends.tflite.options import TFLiteOptions
from mnc.ir.graph import Graph

SIGNATURE = "serving_default"


def build_model(graph: Graph, metadata: dict[str, str], options: TFLiteOptions) -> bytes:
    (input_node,) = graph.inputs
    int8 = any(graph.node(n).qparams is not None for n in graph)
    w = Writer(graph, options, fp16=options.precision == "fp16", int8=int8)
    walk(graph, w, LOWERING)
    graph_input = w.values[input_node]
    labels = output_names(graph)
    outputs = [_output(w, w.values[node], label, graph_input) for node, label in zip(graph.outputs, labels)]
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.name = w.tensors, w.operators, "main"
    subgraph.inputs, subgraph.outputs = [0], outputs

    model = schema.ModelT()
    model.version, model.description = 3, options.description or "mnc"
    model.operatorCodes, model.subgraphs = w.codes(), [subgraph]
    entries = dict(metadata)
    if options.labels:
        entries["labels"] = "\n".join(options.labels) + "\n"
    model.metadata = []
    for key, value in entries.items():
        w.buffers.append(buffer(value.encode("utf-8")))
        model.metadata.append(make(schema.MetadataT, name=key, buffer=len(w.buffers) - 1))
    model.buffers = w.buffers
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE, 0
    signature.inputs = [make(schema.TensorMapT, name=INPUT_NAME, tensorIndex=0)]
    signature.outputs = [
        make(schema.TensorMapT, name=label, tensorIndex=index) for label, index in zip(labels, outputs)
    ]
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _output(w: Writer, x: int, label: str, graph_input: int) -> int:
    """A network output named `label`, float: the int8 tensor dequantised, else the node's own tensor
    renamed, or a copy of it where it is already an output or the input (one tensor, one name)."""
    if w.int8:
        return w.op(
            Op.DEQUANTIZE,
            [x],
            [w.tensor(label, w.tensors[x].shape)],
            Opt.DequantizeOptions,
            make(schema.DequantizeOptionsT),
        )
    if x in (0, graph_input) or w.tensors[x].name in w.output_labels:
        shape = w.tensors[x].shape
        x = w.op(
            Op.RESHAPE,
            [x, w.int32(f"{label}.shape", [-1, *shape[1:]])],
            [w.tensor(label, shape)],
            Opt.ReshapeOptions,
            make(schema.ReshapeOptionsT),
        )
    w.tensors[x].name = label
    w.output_labels.add(label)
    return x
