"""conv1d: rewritten as a height-1 conv2d (then padded by conv_tiles to what the conv2d
rule tiles well), scheduled by the Conv2d rule, same numbers as numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import AVX2, AVX512, NEON, TARGET, graph_module
from tvmflow.conv1d import Conv1dAsConv2d
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules, kernel_rules


def _module(x_shape, w, bias=None, **attrs):
    def body(x):
        y = relax.op.nn.conv1d(x, relax.const(w), **attrs)
        return y if bias is None else relax.op.nn.relu(relax.op.add(y, relax.const(bias)))

    return graph_module({"x": (x_shape, "float32")}, body)


def _reference(x, w, bias, strides=1, padding=0, groups=1):
    """out[n, o, t] = sum_{c, k} pad(x)[n, g(o) * C + c, t * s + k] * w[o, c, k]."""
    cout, cg, k = w.shape
    xp = np.pad(x, [(0, 0), (0, 0), (padding, padding)])
    length = (xp.shape[2] - k) // strides + 1
    frames = np.stack([xp[:, :, t * strides : t * strides + k] for t in range(length)], axis=2)
    per_group = cout // groups
    out = np.concatenate(
        [
            np.einsum(
                "nctk,ock->not",
                frames[:, g * cg : (g + 1) * cg],
                w[g * per_group : (g + 1) * per_group],
            )
            for g in range(groups)
        ],
        axis=1,
    )
    return np.maximum(out + bias, 0)


CASES = [
    # an STFT front end (openWakeWord's melspectrogram, scaled down): 257 = 2^8 + 1 channels,
    # 13 frames (prime): both padded for the register tile, then sliced off again
    ((1, 1, 2000), (257, 1, 64), {"strides": 150}),
    ((2, 6, 50), (10, 6, 5), {"padding": 2}),  # batch 2, channels not a vector multiple
    ((1, 8, 40), (16, 2, 3), {"groups": 4, "strides": 2}),  # grouped
    ((1, 8, 33), (16, 4, 5), {"groups": 2, "padding": 2}),  # 33 columns: padded to 40
]


@pytest.mark.parametrize(("x_shape", "w_shape", "attrs"), CASES)
@pytest.mark.parametrize("target", [TARGET, AVX2], ids=["avx512", "avx2"])
def test_matches_the_convolution(x_shape, w_shape, attrs, target):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype("float32")
    w = rng.standard_normal(w_shape).astype("float32")
    bias = rng.standard_normal((1, w_shape[0], 1)).astype("float32")
    mod = fuse(_module(x_shape, w, bias, **attrs), target)
    rules = kernel_rules(relax.transform.AttachAttrLayoutFreeBuffers()(mod), target)
    convs = {name: rule for name, rule in rules.items() if "conv" in name}
    # the conv2d rule claims the convolution (before the rewrite, none did: Fallback)
    assert convs and set(convs.values()) == {"Conv2d"}, rules
    exe = build(apply_default_schedules(mod, target), target)
    vm = relax.VirtualMachine(exe, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(out, _reference(x, w, bias, **attrs), rtol=1e-4, atol=1e-4)


def test_neon_builds():
    w = np.ones((257, 1, 64), "float32")
    mod = fuse(_module((1, 1, 2000), w, np.ones((1, 257, 1), "float32"), strides=150), NEON)
    build(apply_default_schedules(mod, NEON), NEON)  # codegen only: no aarch64 host here


def test_depthwise_conv1d_is_left_alone():
    def conv2ds(mod):
        found = []

        def visit(expr):
            if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.conv2d":
                found.append(expr)

        relax.analysis.post_order_visit(mod["main"], visit)
        return found

    grouped = Conv1dAsConv2d()(_module((1, 4, 50), np.ones((6, 2, 3), "float32"), groups=2))
    assert len(conv2ds(grouped)) == 1
    depthwise = Conv1dAsConv2d()(_module((1, 4, 50), np.ones((4, 1, 3), "float32"), groups=4))
    assert conv2ds(depthwise) == []  # left to conv1d's own kernel


def test_a_constant_weight_stays_constant_so_its_channels_get_padded():
    mod = fuse(_module((1, 1, 2000), np.ones((257, 1, 64), "float32"), strides=150), AVX512)
    shapes = [
        [int(d) for d in p.ty.shape]
        for f in mod.functions.values()
        if isinstance(f, tvm.tirx.PrimFunc)
        for p in f.params
        if len(p.ty.shape) == 4
    ]
    assert any(288 in s for s in shapes), shapes  # 257 filters padded to 18 vectors of 16
