"""The child process of mnc/backends/tflite/litert.py: LiteRT's reference kernels, which may abort."""

import sys

from mnc.backends.tflite.litert import child_main

child_main(*sys.argv[1:4])
