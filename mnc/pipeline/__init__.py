"""The library API behind the command line: build a spec, compile it to a verified artifact,
re-verify an artifact. Each step reads only what the one before made."""

from mnc.backends.target import TargetOptions
from mnc.pipeline.build import Built, build
from mnc.pipeline.compile import CompileResult, compile_spec, record_of, verify_file
from mnc.pipeline.quantize import Quantization, quantize

__all__ = [
    "Built",
    "CompileResult",
    "Quantization",
    "TargetOptions",
    "build",
    "compile_spec",
    "quantize",
    "record_of",
    "verify_file",
]
