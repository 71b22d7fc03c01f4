"""What compiling a network will cost, estimated from shapes while it is lowered, before anything is
allocated: a spec that would not fit this machine is bad input at the row that makes it too large,
not a MemoryError (or an hour of silence) later."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from math import prod

from mnc.errors import InputError, Loc, param

MAX_LAYERS = 20_000  # IR nodes; MobileNets have 100–300, and lowering is linear in them
# A compile holds float32 weights about six times over (the IR, its optimised copy, the interpreter's
# float64 copy counting twice, the emitted model, the reference model).
BYTES_PER_PARAM = 4 * 6
# The widest layer's output, float32, for a batch of up to 32 images (batch-norm calibration), with
# about three such tensors alive at once.
BYTES_PER_ACTIVATION = 4 * 32 * 3
GIB = 2**30


def available_memory() -> int:
    """Bytes this machine can give a compile now (MemAvailable), else its physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return physical_memory()


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * GIB


@dataclass
class Budget:
    limit: int  # bytes
    source: str  # what set the limit, for the message
    params: int = 0
    widest: int = 0
    layers: int = 0

    @classmethod
    def for_machine(cls, max_memory: int | None = None) -> "Budget":
        if max_memory is not None:
            return cls(max_memory, f"the {param('max_memory')} limit")
        return cls(available_memory(), "this machine's available memory")

    @classmethod
    def shapes_only(cls) -> "Budget":
        """For a lowering that only reads shapes, at a configuration other than the build's: what
        no machine like this one could compile is still refused at its row, but neither the build's
        own limit nor the memory free at this moment applies."""
        return cls(physical_memory(), "this machine's physical memory")

    def need(self) -> int:
        return self.params * BYTES_PER_PARAM + self.widest * BYTES_PER_ACTIVATION

    def add(self, params: int, shape: tuple[int, ...], loc: Loc) -> None:
        """Count one lowered layer; InputError at `loc` if the network has outgrown the budget."""
        self.params += params
        self.widest = max(self.widest, prod(shape))
        self.layers += 1
        if self.layers > MAX_LAYERS:
            raise InputError(
                f"the network has more than {MAX_LAYERS:,} layers by this row; is a repeat count (n) too large?", loc
            )
        if self.need() > self.limit:
            raise InputError(
                f"the network is too large to compile from this row on: {self.params:.3g} parameters and "
                f"{self.widest:.3g} values in its widest layer need about {self.need() / GIB:.3g} GiB, and "
                f"{self.source} is {self.limit / GIB:.3g} GiB",
                loc,
            )


def parse_size(text: str) -> int:
    """'8G', '512M', '1.5G', or a number of bytes."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    try:
        value = float(number) * factor
    except ValueError:
        raise ValueError(f"expected a size such as 8G or 512M, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a finite size above 0, got '{text}'")
    return int(value)
