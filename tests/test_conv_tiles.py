"""conv_tiles: conv2ds padded to channel and column counts the register tile divides, then
sliced back: same numbers, and only where the padding buys a better tile."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm_ffi import structural_equal

from tests.kernels import AVX2, TARGET, graph_module
from tvmflow.conv_tiles import PadConvForTiles, _channel_padding
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules, kernel_rules


def _module(x_shape, w, **attrs):
    return graph_module(
        {"x": (x_shape, "float32")},
        lambda x: relax.op.nn.relu(relax.op.nn.conv2d(x, relax.const(w), **attrs)),
    )


def _reference(x, w, strides=1, padding=0):
    xp = np.pad(x, [(0, 0), (0, 0), (padding, padding), (padding, padding)])
    _, _, kh, kw = w.shape
    rows = (xp.shape[2] - kh) // strides + 1
    cols = (xp.shape[3] - kw) // strides + 1
    out = np.zeros((x.shape[0], w.shape[0], rows, cols), np.float32)
    for a in range(kh):
        for b in range(kw):
            patch = xp[:, :, a : a + strides * rows : strides, b : b + strides * cols : strides]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, a, b])
    return np.maximum(out, 0)


def _conv2d_shapes(mod):
    """(weight rows, output columns) of every conv2d in main."""
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d":
            found.append((int(expr.args[1].ty.shape[0]), int(expr.ty.shape[3])))

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


CASES = [
    # (weights padded to a multiple of the vector width,) output columns padded to:
    ((1, 32, 13, 13), (1000, 32, 1, 1), {}, 14),  # SqueezeNet's classifier conv
    ((1, 8, 29, 29), (16, 8, 3, 3), {}, 28),  # 27 columns -> 28
    ((1, 3, 33, 33), (24, 3, 3, 3), {"strides": 2, "padding": 1}, 18),  # 17 columns -> 18
    ((1, 1, 1, 400), (257, 1, 1, 16), {"strides": 4}, 98),  # an STFT: 257 -> 288 channels
]


@pytest.mark.parametrize(("x_shape", "w_shape", "attrs", "padded"), CASES)
@pytest.mark.parametrize("target", [TARGET, AVX2], ids=["avx512", "avx2"])
def test_matches_the_convolution(x_shape, w_shape, attrs, padded, target):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype("float32")
    w = rng.standard_normal(w_shape).astype("float32")
    mod = _module(x_shape, w, **attrs)
    lanes = 16 if target is TARGET else 8
    rewritten = PadConvForTiles(lanes)(mod)
    assert _conv2d_shapes(rewritten) == [(w_shape[0] + _channel_padding(w_shape[0], lanes), padded)]
    fused = fuse(mod, target)
    rules = kernel_rules(relax.transform.AttachAttrLayoutFreeBuffers()(fused), target)
    assert "Conv2d" in rules.values(), rules
    exe = build(apply_default_schedules(fused, target), target)
    out = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(out, _reference(x, w, **attrs), rtol=1e-4, atol=1e-4)


def test_channel_padding_gives_vector_counts_the_tile_rows_divide():
    assert [c + _channel_padding(c, 16) for c in (257, 1000, 24, 40, 64, 10)] == [
        288,
        1008,
        32,
        48,
        64,
        16,
    ]


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "attrs"),
    [
        ((1, 8, 14, 14), (64, 8, 3, 3), {"padding": 1}),  # 64 channels, 14 = 2 x 7 columns
        ((1, 8, 5, 5), (24, 8, 1, 1), {}),  # 5 columns: too short to pad
        ((1, 8, 16, 16), (20, 4, 3, 3), {"groups": 2}),  # grouped: left alone
    ],
)
def test_leaves_tile_friendly_and_grouped_convs_alone(x_shape, w_shape, attrs):
    mod = _module(x_shape, np.ones(w_shape, "float32"), **attrs)
    assert structural_equal(PadConvForTiles(16)(mod), mod)


@pytest.mark.parametrize(
    ("hw", "columns"),
    [
        (14, 16),  # MobileNetV2's 14x14 depthwise layers: rows of one 16-lane vector
        (28, 32),
        (7, 7),  # 7 -> 8 would be half vectors: left to DepthwiseConv2d
        (56, 56),  # already whole 8-lane vectors
    ],
)
def test_depthwise_rows_become_whole_vectors(hw, columns):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, hw, hw)).astype("float32")
    w = rng.standard_normal((8, 1, 3, 3)).astype("float32")
    mod = _module(x.shape, w, padding=1, groups=8)
    assert _conv2d_shapes(PadConvForTiles(16)(mod)) == [(8, columns)]
    fused = fuse(mod, TARGET)
    rules = kernel_rules(relax.transform.AttachAttrLayoutFreeBuffers()(fused), TARGET)
    assert "DepthwiseConv2dRows" in rules.values() or columns == hw == 7, rules
    exe = build(apply_default_schedules(fused, TARGET), TARGET)
    out = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = np.stack(
        [_reference(x[:, c : c + 1], w[c : c + 1], padding=1)[:, 0] for c in range(8)], 1
    )
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def test_odd_stride_2_depthwise_rows_are_evened_without_a_slice():
    """TF-style one-sided padding leaves a stride-2 depthwise conv 33 padded columns; one more
    (same outputs) lets `DepthwiseConv2dRows` split them in two phases: no slice needed."""
    w = np.ones((8, 1, 3, 3), "float32")
    mod = _module((1, 8, 32, 32), w, strides=2, padding=(0, 0, 1, 1), groups=8)
    rewritten = PadConvForTiles(16)(mod)
    assert _conv2d_shapes(rewritten) == [(8, 16)]
    paddings, slices = [], []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d":
            paddings.append([int(p) for p in expr.attrs.padding])
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.strided_slice":
            slices.append(expr)

    relax.analysis.post_order_visit(rewritten["main"], visit)
    assert paddings == [[0, 0, 1, 2]] and not slices
