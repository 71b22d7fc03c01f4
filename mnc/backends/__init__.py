"""Backends: one module per target, each reading only the IR."""
from mnc.backends import onnx

TARGETS = {"onnx": onnx}
