"""`mnc bench`: the latency of a saved artifact in the runtime an app would use (each target's Timer).

The method is benchmarks/ort_latency.py's: batch 1, a fixed seeded input set once, fixed intra-op
threads that do not spin when idle, warm-up runs (first runs allocate and pick kernels), then timed
runs of the inference alone. Latency is reported as the median with p10, p90 and the minimum: the
median is what a user sees, the minimum what the machine can do when nothing else runs.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mnc.backends import target_of
from mnc.errors import InputError, param
from mnc.host import CPU_FLAGS, cpu, cpu_line  # noqa: F401  (where figures are labelled from)


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
