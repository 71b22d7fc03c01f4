"""Backends: one module per target, each reading only the IR. Each has SUFFIX, output_name(graph),
write(graph, path, metadata, options) and read_metadata(path, shown)."""
from mnc.backends import coreml, onnx

TARGETS = {"onnx": onnx, "coreml": coreml}
