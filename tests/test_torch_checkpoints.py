"""PyTorch checkpoints read without torch: both containers torch writes, against torch's own arrays
(fixtures from tools/make_torch_checkpoint_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT

from mnc.weights.torch_pickle import CheckpointError, read_checkpoint

FIXTURES = ROOT / "tests" / "fixtures" / "torch"


@pytest.mark.parametrize("name", ["state.pt", "state_legacy.pt"])
def test_a_checkpoint_reads_as_torch_wrote_it(name):
    tensors = read_checkpoint((FIXTURES / name).read_bytes())
    with np.load(FIXTURES / "state.npz") as expected:
        assert list(tensors) == list(expected.files)  # the state dict's order is kept
        for key in expected.files:
            assert tensors[key].dtype == expected[key].dtype and tensors[key].shape == expected[key].shape, key
            assert np.array_equal(tensors[key], expected[key]), key


@pytest.mark.parametrize("name", ["state.pt", "state_legacy.pt"])
def test_a_cut_short_checkpoint_is_refused(name):
    raw = (FIXTURES / name).read_bytes()
    with pytest.raises(CheckpointError):
        read_checkpoint(raw[: len(raw) - 40])
