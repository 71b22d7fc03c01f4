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


def _crafted(offset, shape, stride, numel=4, data=b"\0" * 16) -> bytes:
    """A zip checkpoint whose one tensor has the given metadata, written without torch: pickle names
    the stand-ins below torch.FloatStorage and torch._utils._rebuild_tensor_v2, as torch's files do."""
    import io
    import pickle
    import sys
    import types
    import zipfile

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        pass

    FloatStorage.__module__, _rebuild_tensor_v2.__module__ = "torch", "torch._utils"
    FloatStorage.__qualname__, _rebuild_tensor_v2.__qualname__ = "FloatStorage", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2

    class Tensor:
        def __reduce__(self):
            return (_rebuild_tensor_v2, ("STORAGE", offset, shape, stride, False, None))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", FloatStorage, "0", "cpu", numel) if obj == "STORAGE" else None

    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        state = io.BytesIO()
        Pickler(state, protocol=2).dump({"w": Tensor()})
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("archive/data.pkl", state.getvalue())
        z.writestr("archive/data/0", data)
    return archive.getvalue()


@pytest.mark.parametrize(
    "offset,shape,stride",
    [
        (0, (2, 2), (2, 1)),  # fine: the control
        (0, (4,), (-1,)),  # a negative stride would read before the buffer
        (-3, (2,), (1,)),  # a negative offset
        (0, (10**6, 10**6), (0, 0)),  # stride 0: a huge view of four floats
        (3, (2,), (1,)),  # past the end
        (0, (2, 2), (2,)),  # a stride missing
        (9, (), ()),  # a scalar past the end
    ],
)
def test_crafted_tensor_metadata_is_refused_not_followed(offset, shape, stride):
    raw = _crafted(offset, shape, stride)
    if (offset, shape, stride) == (0, (2, 2), (2, 1)):
        assert read_checkpoint(raw)["w"].shape == (2, 2)
        return
    with pytest.raises(CheckpointError):
        read_checkpoint(raw)


def test_a_malformed_storage_reference_is_a_checkpoint_error_and_leaves_no_trace():
    with pytest.raises(CheckpointError):
        read_checkpoint(_crafted(0, (2,), (1,), numel="four"))
    with pytest.raises(CheckpointError):
        read_checkpoint(_crafted(0, (2,), (1,), data=b"\0" * 3))  # bytes that do not fit the size
    # Reading a good file afterwards still works: nothing a pickle did to one read outlives it.
    assert read_checkpoint(_crafted(0, (2, 2), (2, 1)))["w"].shape == (2, 2)


def test_a_crafted_checkpoint_on_the_command_line_is_a_located_exit_2(tmp_path, capsys):
    from conftest import SPECS

    from mnc.cli import main

    path = tmp_path / "crafted.pt"
    path.write_bytes(_crafted(0, (4,), (-1,)))
    argv = ["compile", str(SPECS / "v2.mnet"), "--weights", str(path), "--target", "onnx", "-o", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: error: cannot read PyTorch checkpoint: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists()
