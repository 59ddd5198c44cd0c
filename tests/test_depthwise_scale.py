"""depthwise_scale: 1x1 depthwise convs become per-channel multiplies, same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import TARGET
from tvmflow.depthwise_scale import DepthwiseScaleAsMultiply
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules


def _conv(x_shape, w, **attrs):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, relax.const(w), **attrs))
        bb.emit_func_output(out)
    return bb.get()


def _convs(mod):
    found = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.nn.conv2d":
            found.append(e)

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_1x1_is_a_multiply_with_same_numbers(multiplier):
    rng = np.random.default_rng(multiplier)
    x = rng.standard_normal((2, 24, 7, 9), dtype="float32")
    w = rng.standard_normal((24 * multiplier, 1, 1, 1), dtype="float32")
    mod = _conv(x.shape, w, groups=24)
    assert _convs(DepthwiseScaleAsMultiply()(mod)) == []
    exe = build(apply_default_schedules(fuse(mod, TARGET), TARGET), TARGET)
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    # output channel o reads input channel o // multiplier
    want = x[:, np.arange(24 * multiplier) // multiplier] * w.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("w_shape", "attrs"),
    [
        ((24, 1, 1, 1), {"groups": 24, "strides": 2}),  # strided: a subsample, not elementwise
        ((24, 1, 1, 1), {"groups": 24, "padding": 1}),  # padded border
        ((24, 1, 3, 3), {"groups": 24, "padding": 1}),  # 3x3 depthwise
        ((24, 24, 1, 1), {}),  # dense 1x1
        ((24, 2, 1, 1), {"groups": 12}),  # grouped, 2 channels per group
    ],
)
def test_other_convs_are_kept(w_shape, attrs):
    w = np.ones(w_shape, dtype="float32")
    assert len(_convs(DepthwiseScaleAsMultiply()(_conv((1, 24, 8, 8), w, **attrs)))) == 1
