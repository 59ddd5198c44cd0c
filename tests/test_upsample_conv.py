"""upsample_conv: kernel==stride conv2d_transpose as a 1x1 conv + pixel shuffle, same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import AVX2, NEON, TARGET, graph_module
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules
from tvmflow.upsample_conv import SplitUpsamplingConvTranspose


def _module(x_shape, w, bias=None, **attrs):
    def body(x):
        y = relax.op.nn.conv2d_transpose(x, relax.const(w), **attrs)
        return y if bias is None else relax.op.nn.relu(relax.op.add(y, relax.const(bias)))

    return graph_module({"x": (x_shape, "float32")}, body)


def _reference(x, w, bias):
    """out[n, o, s*i + a, s*j + b] = sum_c x[n, c, i, j] * w[c, o, a, b] (kernel == stride)."""
    n, _, h, wd = x.shape
    _, oc, kh, kw = w.shape
    y = np.einsum("ncij,coab->noiajb", x, w).reshape(n, oc, h * kh, wd * kw)
    return np.maximum(y + bias, 0)


def _ops(mod):
    names = set()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            names.add(expr.op.name)

    relax.analysis.post_order_visit(mod["main"], visit)
    return names


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "strides"),
    [
        ((1, 6, 9, 7), (6, 10, 2, 2), 2),  # odd spatial dims, channels not a vector multiple
        ((2, 5, 4, 6), (5, 3, 3, 3), 3),  # batch 2, stride 3
        ((1, 8, 5, 3), (8, 16, 2, 1), (2, 1)),  # non-square: upsample rows only
    ],
)
@pytest.mark.parametrize("target", [TARGET, AVX2], ids=["avx512", "avx2"])
def test_matches_the_transposed_convolution(x_shape, w_shape, strides, target):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype("float32")
    w = rng.standard_normal(w_shape).astype("float32")
    bias = rng.standard_normal((1, w_shape[1], 1, 1)).astype("float32")
    mod = fuse(_module(x_shape, w, bias, strides=strides), target)
    assert not any("conv2d_transpose" in gv.name_hint for gv in mod.get_global_vars())
    exe = build(apply_default_schedules(mod, target), target)
    vm = relax.VirtualMachine(exe, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(out, _reference(x, w, bias), rtol=1e-4, atol=1e-4)


def test_neon_builds():
    w = np.ones((6, 10, 2, 2), "float32")
    mod = fuse(_module((1, 6, 9, 7), w, np.ones((1, 10, 1, 1), "float32"), strides=2), NEON)
    build(apply_default_schedules(mod, NEON), NEON)  # codegen only: no aarch64 host here


@pytest.mark.parametrize(
    ("w_shape", "attrs", "claimed"),
    [
        ((4, 8, 2, 2), {"strides": 2}, True),
        ((4, 8, 4, 4), {"strides": 4}, True),
        ((4, 8, 3, 3), {"strides": 2, "padding": 1}, False),  # overlapping taps
        ((4, 8, 2, 2), {"strides": 2, "padding": 1}, False),  # cropped output
        ((4, 8, 2, 2), {"strides": 2, "output_padding": 1}, False),
        ((4, 4, 2, 2), {"strides": 2, "groups": 2}, False),
        ((4, 8, 2, 2), {"strides": 1}, False),
        ((4, 8, 1, 1), {"strides": 1}, False),  # already a 1x1 conv
    ],
)
def test_claims_only_kernel_equal_to_stride(w_shape, attrs, claimed):
    mod = _module((1, 4, 5, 5), np.ones(w_shape, "float32"), **attrs)
    out = SplitUpsamplingConvTranspose()(mod)
    assert ("relax.nn.conv2d_transpose" not in _ops(out)) == claimed
    assert ("relax.nn.conv2d" in _ops(out)) == claimed
    assert out["main"].ret_ty.shape.values[2].value == mod["main"].ret_ty.shape.values[2].value
