"""The machine mnc runs on, as figures and host-dependent results are labelled with it."""

from __future__ import annotations

import platform
from pathlib import Path

# The x86 features ONNX Runtime's and XNNPACK's kernels choose between: figures say which were there.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu() -> tuple[str, list[str]]:
    """This machine's processor and which of CPU_FLAGS it has (from /proc/cpuinfo on Linux)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine()):
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name, [f for f in CPU_FLAGS if f in flags]


def cpu_line() -> str:
    """The processor and its flags, as figures are labelled with them."""
    name, flags = cpu()
    return f"{name} ({', '.join(flags) or 'none of ' + ', '.join(CPU_FLAGS)})"


def saturating_int8_x86() -> bool:
    """An x86 host whose ONNX Runtime u8×s8 int8 kernels sum pairs of products in 16 bits (no VNNI):
    they saturate where a phone's (and a VNNI host's) do not."""
    _, flags = cpu()
    return platform.machine() in ("x86_64", "AMD64") and not {"avx512_vnni", "avx_vnni"} & set(flags)
