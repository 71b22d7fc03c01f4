"""The op record: every op states its attributes, error model, int8 rule and initialiser in one
place, the registry refuses an op without them, Graph.validate checks attributes against the
schema, and each op's float32 error model covers what a float32 evaluation of it really does."""

import dataclasses
import re

import numpy as np
import pytest
from conftest import ROOT

from mnc.errors import Loc
from mnc.ir.activations import ACTIVATIONS, slope
from mnc.ir.graph import Graph, GraphError
from mnc.ir.interpreter import run
from mnc.ir.ops import OPS, OpDef, register
from mnc.ir.shapes import infer_shapes
from mnc.verification.bounds import FLOAT32, TOLERANCE_SIGMAS, RoundingVariance

SRC = Loc("t.mnet", 1, 1)
CONV = {"out_channels": 8, "kernel": [3, 3], "stride": [2, 2], "pads": [1, 1, 1, 1], "groups": 1, "bias": True}
# One node of each op, on a 4×9×9 input (second inputs, where an op takes two or more, are made by a
# conv of the input): (attrs, how many inputs, the shape its input must have).
EXAMPLES = {
    "conv": (dict(CONV, fused_act="hswish", dilation=[2, 2]), 1),
    "batchnorm": ({"eps": 1e-3}, 1),
    "act": ({"fn": "hswish"}, 1),
    "add": ({}, 2),
    "mul": ({}, 2),
    "global_avgpool": ({}, 1),
    "avgpool": ({"kernel": [3, 3], "stride": [2, 2]}, 1),
    "resize": ({"size": [13, 7]}, 1),
    "concat": ({}, 2),
    "per_anchor": ({"columns": 2}, 1),
    "flatten": ({}, 1),
    "fc": ({"out_features": 5, "bias": True, "fused_act": "relu6"}, 1),
    "softmax": ({}, 1),
    "affine": ({"fused_act": "hswish"}, 1),
}


def one_op(op: str) -> Graph:
    attrs, arity = EXAMPLES[op]
    g = Graph()
    g.add("x", "input", attrs={"shape": [4, 9, 9]}, src=SRC)
    first = "x"
    if op in ("fc", "softmax"):
        g.add("pool", "global_avgpool", ["x"], src=SRC)
        g.add("flat", "flatten", ["pool"], src=SRC)
        first = "flat"
    inputs = [first]
    if arity == 2:  # a second tensor of the same shape, computed from the first
        g.add("other", "conv", ["x"], attrs=dict(CONV, out_channels=4, stride=[1, 1]), src=SRC)
        inputs.append("other")
    g.add("y", op, inputs, attrs=attrs, src=SRC)
    g.outputs = ["y"]
    return infer_shapes(g)


def seeded(g: Graph) -> None:
    """Every node's parameters from its record's initialiser, fed a seeded batch."""
    values = {"x": np.random.default_rng(1).standard_normal((2, 4, 9, 9))}
    for name in g.topo()[1:]:
        node = g.node(name)
        xs = [values[p] for p in g.inputs_of(name)]
        shapes = g.param_shapes(name)
        if shapes:
            params = OPS[node.op].init(np.random.default_rng(7), shapes, xs[0])
            node.params = {k: np.asarray(v, np.float32) for k, v in params.items()}
        values[name] = OPS[node.op].run(node.attrs, node.params, xs)


def test_every_op_has_an_example_here():
    assert set(EXAMPLES) == set(OPS) - {"input"}


@pytest.mark.parametrize("op", sorted(EXAMPLES))
def test_the_error_model_covers_a_float32_evaluation(op):
    """Each op's derived bound holds for its float32 result element by element, with no floor under
    it (verification adds one; here it would hide a model that forgot the op's own errors: with a
    zero model, 10 of the 13 ops exceed 8 σ here, by up to 1000×; flatten and per_anchor move values
    exactly, and softmax's errors are mostly its own rounding)."""
    g = one_op(op)
    seeded(g)
    g.validate(require_params=True)
    x = np.random.default_rng(0).standard_normal((4, 4, 9, 9)) * 3
    exact = run(g, {"x": x})["y"]
    float32 = run(g, {"x": x.astype(np.float32)}, dtype=np.float32)["y"]
    model = RoundingVariance(g, FLOAT32)
    model.run({"x": x})
    sigma = np.sqrt(model.variances["y"])
    assert np.all(np.isfinite(sigma))
    error = np.abs(float32 - exact)
    assert np.all(error[sigma == 0] == 0), "no error is allowed where the model says none can arise"
    assert np.max(error[sigma > 0] / sigma[sigma > 0]) <= TOLERANCE_SIGMAS


def test_an_op_without_an_error_model_or_initialiser_is_refused():
    base = OPS["conv"]
    with pytest.raises(ValueError, match="no float32 error model"):
        register(dataclasses.replace(base, name="conv_no_error", error=None))
    with pytest.raises(ValueError, match="no initialiser"):
        register(dataclasses.replace(base, name="conv_no_init", init=None))
    with pytest.raises(ValueError, match="registered twice"):
        register(base)
    with pytest.raises(TypeError):  # the error model and the int8 rule have no defaults
        OpDef("bare", 1, attrs=(), infer=lambda a, s: s[0], run=lambda a, p, xs: xs[0])
    assert "conv_no_error" not in OPS and "conv_no_init" not in OPS


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({**CONV, "stride": [2]}, "attribute 'stride' is [2], expected two whole numbers"),
        ({k: v for k, v in CONV.items() if k != "groups"}, "attribute 'groups' is missing"),
        ({**CONV, "padding": "same"}, "unknown attribute 'padding'"),
        ({**CONV, "fused_act": "mish"}, "attribute 'fused_act' is 'mish'"),
        ({**CONV, "bias": 1}, "attribute 'bias' is 1, expected true or false"),
    ],
)
def test_validate_checks_attributes_against_the_schema(attrs, message):
    g = Graph()
    g.add("x", "input", attrs={"shape": [4, 9, 9]}, src=SRC)
    g.add("y", "conv", ["x"], attrs=attrs, src=SRC)
    g.outputs = ["y"]
    with pytest.raises(GraphError, match=re.escape(message)) as info:
        g.validate()
    assert info.value.node == "y"


@pytest.mark.parametrize("fn", sorted(ACTIVATIONS))
def test_an_activations_stated_slope_bounds_its_real_one(fn):
    """The steepest slope an activation states near x is at least every difference quotient within
    the window: an error grows through it by no more than the bounds assume."""
    f = ACTIVATIONS[fn].function
    x = np.linspace(-8, 8, 1601)
    sigma = np.full_like(x, 0.05)
    stated = slope(fn, x, sigma)
    for offset in np.linspace(-0.4, 0.4 - 1e-4, 17):  # within 8 σ either side
        a, b = x + offset, x + offset + 1e-4
        quotient = np.abs(f(b) - f(a)) / 1e-4
        assert np.all(quotient <= stated + 1e-6), f"{fn}: slope {quotient.max():.3f} at offset {offset}"


@pytest.mark.parametrize("fn", ["silu", "gelu", "sigmoid"])
def test_a_smooth_activations_stated_slope_is_close_to_its_real_one(fn):
    """Stated slopes are bounds, and tight ones: in a narrow window the steepest difference quotient
    reaches the stated slope within 1% (a bound taken loosely grows through every layer)."""
    f = ACTIVATIONS[fn].function
    x = np.linspace(-8, 8, 1601)
    stated = slope(fn, x, np.full_like(x, 1e-4))
    quotient = np.abs(f(x + 4e-4) - f(x - 4e-4)) / 8e-4
    assert np.all(quotient <= stated * 1.0001 + 1e-9) and np.all(stated <= quotient * 1.01 + 1e-3)


def test_int8_rules_are_the_records():
    rules = {name: op.int8_rule({"fn": "relu"}) if name == "act" else op.int8_rule({}) for name, op in OPS.items()}
    assert {n for n, r in rules.items() if r.grid == "input"} == {
        "global_avgpool",
        "avgpool",
        "resize",
        "per_anchor",
        "flatten",
    }
    assert rules["softmax"].fixed.scale == 1 / 256 and OPS["act"].int8_rule({"fn": "sigmoid"}).grid == "fixed"
    assert {n for n, op in OPS.items() if op.int8_weights} == {n for n, op in OPS.items() if op.absorbs}


@pytest.mark.parametrize(
    "fn,torch_name",
    [("silu", "silu"), ("gelu", "gelu"), ("sigmoid", "sigmoid"), ("hswish", "hardswish"), ("hsigmoid", "hardsigmoid")],
)
def test_activations_compute_what_pytorch_computes(fn, torch_name):
    """The float64 reference of each activation against PyTorch's own, in float64 (a fixture PyTorch made):
    equal to float64's resolution of values of order 1 (mnc's sigmoid, 0.5·(1 + tanh(x/2)), keeps
    absolute, not relative, precision where it nears 0)."""
    data = np.load(ROOT / "tests" / "fixtures" / "activations" / "torch_float64.npz")
    ours, theirs = ACTIVATIONS[fn].function(data["x"]), data[torch_name]
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-15)
