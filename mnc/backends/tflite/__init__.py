"""The TFLite target: IR → a LiteRT flatbuffer, built with the schema's object API that ships in
ai-edge-litert, and run by the LiteRT interpreter.

options.py (the flags' values), flatbuffer.py (tensors, buffers, operator versions), lowering.py
(IR ops → TFLite operators, NHWC), model.py (the model: outputs, signature, metadata), resize.py
(the int8 resize's fixed-point allowance), litert.py (running it, the child process), target.py.
"""

from mnc.backends.tflite.litert import run_litert
from mnc.backends.tflite.target import TARGET

__all__ = ["TARGET", "run_litert"]
