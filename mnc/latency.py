"""`mnc bench`: the latency of a saved artifact in the runtime an app would use (each target's Timer).

The method is benchmarks/ort_latency.py's: batch 1, a fixed seeded input set once, fixed intra-op
threads that do not spin when idle, warm-up runs (first runs allocate and pick kernels), then timed
runs of the inference alone. Latency is reported as the median with p10, p90 and the minimum: the
median is what a user sees, the minimum what the machine can do when nothing else runs.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mnc.backends import target_of
from mnc.errors import InputError, param

# The x86 features ONNX Runtime's and XNNPACK's kernels choose between: figures say which were there.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class Latency:
    artifact: str
    runtime: str
    threads: int
    warmup: int
    runs: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    cpu: str
    cpu_flags: list[str]

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (
            f"{self.artifact}: median {self.median_ms:.3f} ms (p10 {self.p10_ms:.3f}, p90 {self.p90_ms:.3f}, "
            f"min {self.min_ms:.3f}) over {self.runs} runs, {self.threads} thread(s), {self.runtime}"
        )


def bench(artifact: str | Path, *, threads: int = 1, warmup: int = 10, runs: int = 100) -> Latency:
    path = Path(artifact)
    target = target_of(path)
    if threads < 1:
        raise InputError(f"{param('threads', threads)}: at least 1")
    if runs < 1 or warmup < 0:
        raise InputError(
            f"{param('runs', runs)} {param('warmup', warmup)}: at least 1 timed run, and no negative warm-up"
        )
    if not path.exists():
        raise InputError(f"cannot read artifact '{path}': no such file or directory")
    timer = target.timer(path, threads)
    for _ in range(warmup):
        timer.run()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        timer.run()
        times[i] = time.perf_counter() - start
    ms = 1e3 * times
    name, flags = cpu()
    return Latency(
        artifact=str(path),
        runtime=timer.runtime,
        threads=threads,
        warmup=warmup,
        runs=runs,
        median_ms=round(float(np.median(ms)), 4),
        p10_ms=round(float(np.percentile(ms, 10)), 4),
        p90_ms=round(float(np.percentile(ms, 90)), 4),
        min_ms=round(float(ms.min()), 4),
        mean_ms=round(float(ms.mean()), 4),
        cpu=name,
        cpu_flags=flags,
    )


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
