"""depthwise_scale: 1x1 depthwise convs become per-channel multiplies, same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.op.nn import conv2d

from tests.kernels import TARGET, graph_module
from tvmflow.depthwise_scale import DepthwiseScaleAsMultiply
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules


def _conv(x_shape, w, **attrs):
    return graph_module({"x": (x_shape, "float32")}, lambda x: conv2d(x, relax.const(w), **attrs))


def _convs(mod):
    found = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.nn.conv2d":
            found.append(e)

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def _run(mod, x):
    exe = build(apply_default_schedules(fuse(mod, TARGET), TARGET), TARGET)
    return relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _reference(x, w, stride, pad):
    """Direct depthwise conv with a channel multiplier (float64): output channel o reads input
    channel o // multiplier."""
    multiplier = w.shape[0] // x.shape[1]
    xp = np.pad(x.astype("float64"), [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    xp = xp[:, np.arange(w.shape[0]) // multiplier]
    kh, kw = w.shape[2:]
    oh, ow = (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(kh):
        for j in range(kw):
            window = xp[
                :, :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride
            ]
            out += window * w[None, :, 0, i, j, None, None]
    return out


@pytest.mark.parametrize(("multiplier", "stride"), [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_depthwise_1x1_is_a_multiply_with_same_numbers(multiplier, stride):
    rng = np.random.default_rng(multiplier)
    x = rng.standard_normal((2, 24, 7, 9), dtype="float32")
    w = rng.standard_normal((24 * multiplier, 1, 1, 1), dtype="float32")
    mod = _conv(x.shape, w, groups=24, strides=stride)
    assert _convs(DepthwiseScaleAsMultiply()(mod)) == []
    got = _run(mod, x)
    want = _reference(x, w, stride, 0)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("k", "stride"), [(7, 2), (3, 2), (3, 1)])
def test_channel_multiplier_is_a_depthwise_conv_over_repeated_channels(k, stride):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((1, 16, 15, 12), dtype="float32")
    w = rng.standard_normal((32, 1, k, k), dtype="float32")
    mod = _conv(x.shape, w, groups=16, strides=stride, padding=k // 2)
    (conv,) = _convs(DepthwiseScaleAsMultiply()(mod))
    assert int(conv.attrs.groups) == 32
    got = _run(mod, x)
    want = _reference(x, w, stride, k // 2)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("w_shape", "attrs"),
    [
        ((24, 1, 1, 1), {"groups": 24, "padding": 1}),  # padded border
        ((24, 1, 3, 3), {"groups": 24, "padding": 1}),  # plain 3x3 depthwise
        ((24, 24, 1, 1), {}),  # dense 1x1
        ((24, 2, 1, 1), {"groups": 12}),  # grouped, 2 channels per group
        ((8, 1, 3, 3), {"padding": 1}),  # dense conv over one channel (grayscale stem)
    ],
)
def test_other_convs_are_kept(w_shape, attrs):
    w = np.ones(w_shape, dtype="float32")
    mod = _conv((1, 24 if w_shape[1] > 1 or "groups" in attrs else 1, 8, 8), w, **attrs)
    (conv,) = _convs(DepthwiseScaleAsMultiply()(mod))
    assert conv.same_as(_convs(mod)[0])
