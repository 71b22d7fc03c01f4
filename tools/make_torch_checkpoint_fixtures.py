#!/usr/bin/env python3
"""Make the checkpoint-format fixtures under tests/fixtures/torch/: one small state dict saved by
torch in both of its containers, for mnc's torch-free reader (mnc/weights/torch_pickle.py).

Needs torch (never a dependency of mnc; the tests only read the files written here):

    .peer-torch/bin/python tools/make_torch_checkpoint_fixtures.py

Writes `state.pt` (the zip archive of torch >= 1.6), `state_legacy.pt` (the legacy stream that
torchvision's published weights use) and `state.npz`, torch's own `.numpy()` of every tensor.
The state dict has the awkward cases: float16, int64 and bool tensors, a 0-d tensor, a
transposed (non-contiguous) tensor, and two tensors that share one storage at different offsets.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "torch"


def main() -> None:
    torch.manual_seed(0)
    shared = torch.randn(40)
    state = OrderedDict(
        [
            ("conv.weight", torch.randn(4, 3, 3, 3)),
            ("bn.num_batches_tracked", torch.tensor(7, dtype=torch.int64)),
            ("half", torch.randn(5, 2).half()),
            ("mask", torch.tensor([True, False, True])),
            ("transposed", torch.randn(3, 6).t()),
            ("first_half", shared[:20].view(4, 5)),
            ("second_half", shared[20:].view(5, 4)),
            ("scalar", torch.tensor(2.5)),
        ]
    )
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save(state, OUT / "state.pt")
    torch.save(state, OUT / "state_legacy.pt", _use_new_zipfile_serialization=False)
    np.savez(OUT / "state.npz", **{k: v.numpy() for k, v in state.items()})


if __name__ == "__main__":
    main()
