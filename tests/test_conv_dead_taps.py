"""conv_dead_taps: a conv2d's taps that read only zero padding are dropped, same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.op.nn import conv2d

from tests.kernels import TARGET, graph_module
from tvmflow.conv_dead_taps import DropDeadConvTaps, live_taps
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules


def _conv(x_shape, w, **attrs):
    return graph_module({"x": (x_shape, "float32")}, lambda x: conv2d(x, relax.const(w), **attrs))


def _reference(x, w, stride, pad, dilation):
    """Direct conv over the zero-padded input, every tap (float64)."""
    top, left, bottom, right = pad
    xp = np.pad(x.astype("float64"), [(0, 0), (0, 0), (top, bottom), (left, right)])
    kh, kw = w.shape[2:]
    oh = (xp.shape[2] - dilation * (kh - 1) - 1) // stride + 1
    ow = (xp.shape[3] - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(kh):
        for j in range(kw):
            window = xp[
                :,
                :,
                i * dilation : i * dilation + stride * (oh - 1) + 1 : stride,
                j * dilation : j * dilation + stride * (ow - 1) + 1 : stride,
            ]
            out += np.einsum("nchw,oc->nohw", window, w[:, :, i, j])
    return out


def _kernel_shapes(mod):
    found = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.nn.conv2d":
            shape = e.args[1].ty.shape
            found.append((int(shape[2]), int(shape[3])))

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


# (input H/W, kernel, stride, padding, dilation, kernel left): ASPP on a 16x16 map
CASES = [
    (16, 3, 1, 36, 36, (1, 1)),  # every off-center tap in the padding: a 1x1 conv
    (16, 3, 1, 24, 24, (1, 1)),
    (16, 3, 1, 12, 12, (3, 3)),  # each tap reads the map somewhere: unchanged
    (9, 3, 2, 10, 10, (1, 1)),  # strided
    (6, 5, 1, 6, 3, (3, 3)),  # outer taps dead, inner 3 kept (still dilated)
]


@pytest.mark.parametrize(("size", "k", "stride", "pad", "dilation", "left"), CASES)
def test_dead_taps_dropped_and_same_numbers(size, k, stride, pad, dilation, left):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 24, size, size), dtype="float32")
    w = rng.standard_normal((16, 24, k, k), dtype="float32")
    attrs = {"strides": stride, "padding": pad, "dilation": dilation}
    mod = _conv(x.shape, w, **attrs)
    assert _kernel_shapes(DropDeadConvTaps()(mod)) == [left]
    exe = build(apply_default_schedules(fuse(mod, TARGET), TARGET), TARGET)
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = _reference(x, w, stride, (pad,) * 4, dilation)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_live_taps_all_live_is_none():
    assert live_taps(size=16, out=16, kernel=3, stride=1, dilation=1, before=1) is None
    assert live_taps(size=16, out=16, kernel=3, stride=1, dilation=16, before=16) == range(1, 2)


def test_weight_as_input_is_sliced_in_the_graph():
    """A non-constant weight (a function parameter) gets a strided_slice: same numbers."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 16, 16), "float32"))
    w = relax.Var("w", relax.TensorType((4, 8, 3, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, w, padding=24, dilation=24))
        bb.emit_func_output(out)
    mod = bb.get()
    assert _kernel_shapes(DropDeadConvTaps()(mod)) == [(1, 1)]
    exe = build(apply_default_schedules(fuse(mod, TARGET), TARGET), TARGET)
    rng = np.random.default_rng(1)
    x_np = rng.standard_normal((1, 8, 16, 16), dtype="float32")
    w_np = rng.standard_normal((4, 8, 3, 3), dtype="float32")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x_np), tvm.runtime.tensor(w_np)).numpy()
    want = _reference(x_np, w_np, 1, (24,) * 4, 24)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
