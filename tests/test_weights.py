"""Seeded weights: deterministic, and a network whose activations are neither exploding,
vanishing nor saturated, so that verifying it means something."""

import numpy as np
import pytest
from conftest import SPECS

from mnc.ir.interpreter import run
from mnc.pipeline import build
from mnc.samples import STREAM_VERIFICATION, sample_images


@pytest.mark.parametrize("spec,alpha,resolution", [("v1.mnet", 1.0, 160), ("v2.mnet", 1.0, 160), ("v2.mnet", 0.35, 96)])
def test_activations_are_realistic_at_every_depth(spec, alpha, resolution):
    built = build(SPECS / spec, alpha=alpha, resolution=resolution, seed=0)
    g = built.graph
    x = sample_images(built.spec.settings, resolution, 4, seed=0, stream=STREAM_VERIFICATION)  # unseen images
    values = run(g, {"input": x}, keep=True)
    for name, value in values.items():
        data = g.node(name)
        if data.op in ("batchnorm", "add"):
            assert 0.2 < value.std() < 5.0, (name, value.std())
        if data.op == "act":
            assert 0.2 < value.mean() < 2.0, (name, value.mean())  # not dead, not exploding
            if data.attrs["fn"] == "relu6":
                assert np.mean(value >= 6.0) < 0.01, name  # hardly saturated
    (out,) = (values[o] for o in g.outputs)
    if g.node(g.outputs[0]).op == "softmax":
        assert out.max() > 5.0 / out.shape[1]  # not a flat distribution
    else:
        assert 0.3 < out.std() < 3.0
    # Different images give different predictions: the network is not constant.
    assert np.abs(out[0] - out[1]).max() > 0.1 * np.abs(out).max()


def test_same_seed_same_weights_other_seed_other_weights():
    a = build(SPECS / "v2.mnet", alpha=0.35, resolution=64, seed=1).graph
    b = build(SPECS / "v2.mnet", alpha=0.35, resolution=64, seed=1).graph
    c = build(SPECS / "v2.mnet", alpha=0.35, resolution=64, seed=2).graph
    for name in a:
        for key, value in a.node(name).params.items():
            assert value.dtype == np.float32
            np.testing.assert_array_equal(value, b.node(name).params[key])
    w = "stage3.block0.expand"
    assert not np.array_equal(a.node(w).params["weight"], c.node(w).params["weight"])


def test_batch_norm_statistics_come_from_the_activations_it_sees():
    g = build(SPECS / "v1.mnet", alpha=0.25, resolution=96, seed=0).graph
    p = g.node("stage5.block0.pw.bn").params
    assert np.all(p["var"] > 0) and not np.allclose(p["mean"], 0)
    assert np.all((0.5 <= p["gamma"]) & (p["gamma"] <= 1.5))
