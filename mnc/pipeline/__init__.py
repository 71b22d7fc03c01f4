"""The library API behind the command line: build a spec, compile it to a verified artifact,
re-verify an artifact. Each step reads only what the one before made; each takes a BuildRequest."""

from mnc.backends.target import TargetOptions
from mnc.pipeline.build import Built, build
from mnc.pipeline.compile import (
    CompileResult,
    check_artifact,
    compile_spec,
    int8_layer_errors,
    record_of,
    verify_file,
)
from mnc.pipeline.quantize import quantize
from mnc.pipeline.report import Report, Verified
from mnc.pipeline.request import BuildRequest, Quantization, quantization

__all__ = [
    "BuildRequest",
    "Built",
    "CompileResult",
    "Quantization",
    "Report",
    "TargetOptions",
    "Verified",
    "build",
    "check_artifact",
    "compile_spec",
    "quantization",
    "quantize",
    "record_of",
    "verify_file",
    "int8_layer_errors",
]
