"""conv_branches: constant-weight conv branches over one input, added, become one conv with the
same numbers (MobileOne / RepVGG branches)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import TARGET
from tvmflow.conv_branches import ParallelConvBranches
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules


def _branches(x_shape, specs, rng):
    """x -> sum over specs of conv2d(x, w) + reshape(bias); returns the module and weights."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    weights = []
    with bb.function("main", [x]):
        with bb.dataflow():
            total = None
            for w_shape, attrs in specs:
                w = rng.standard_normal(w_shape, dtype="float32")
                b = rng.standard_normal((w_shape[0],), dtype="float32")
                weights.append((w, b, attrs))
                conv = bb.emit(relax.op.nn.conv2d(x, relax.const(w), **attrs))
                bias = bb.emit(relax.op.reshape(relax.const(b), (1, w_shape[0], 1, 1)))
                term = bb.emit(relax.op.add(conv, bias))
                total = term if total is None else bb.emit(relax.op.add(total, term))
            out = bb.emit_output(total)
        bb.emit_func_output(out)
    return bb.get(), weights


def _reference(x, weights):
    """Each branch as a direct conv (float64), summed."""
    total = 0.0
    for w, b, attrs in weights:
        stride, pad, groups = (
            attrs.get("strides", 1),
            attrs.get("padding", 0),
            attrs.get("groups", 1),
        )
        top, left, bottom, right = (pad,) * 4 if isinstance(pad, int) else pad
        xp = np.pad(x.astype("float64"), [(0, 0), (0, 0), (top, bottom), (left, right)])
        kh, kw = w.shape[2:]
        oh, ow = (xp.shape[2] - kh) // stride + 1, (xp.shape[3] - kw) // stride + 1
        per_in, per_out = x.shape[1] // groups, w.shape[0] // groups
        out = np.zeros((x.shape[0], w.shape[0], oh, ow))
        for g in range(groups):
            xs = xp[:, g * per_in : (g + 1) * per_in]
            ws = w[g * per_out : (g + 1) * per_out]
            for i in range(kh):
                for j in range(kw):
                    window = xs[
                        :,
                        :,
                        i : i + stride * (oh - 1) + 1 : stride,
                        j : j + stride * (ow - 1) + 1 : stride,
                    ]
                    out[:, g * per_out : (g + 1) * per_out] += np.einsum(
                        "nchw,oc->nohw", window, ws[:, :, i, j]
                    )
        total = total + out + b.reshape(1, -1, 1, 1)
    return total


def _conv_count(mod):
    found = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.nn.conv2d":
            found.append(e)

    relax.analysis.post_order_visit(mod["main"], visit)
    return len(found)


CASES = [
    # FastViT's stem: 3x3 s2 + 1x1 s2 over the image
    (
        (1, 3, 20, 20),
        [((8, 3, 3, 3), {"strides": 2, "padding": 1}), ((8, 3, 1, 1), {"strides": 2})],
        1,
    ),
    # RepVGG: 3x3 + 1x1 + 1x1, stride 1
    (
        (1, 4, 9, 9),
        [((4, 4, 3, 3), {"padding": 1}), ((4, 4, 1, 1), {}), ((4, 4, 1, 1), {})],
        1,
    ),
    # MobileOne depthwise: 3x3 dw + 1x1 dw, stride 2
    (
        (1, 6, 11, 11),
        [
            ((6, 1, 3, 3), {"strides": 2, "padding": 1, "groups": 6}),
            ((6, 1, 1, 1), {"strides": 2, "groups": 6}),
        ],
        1,
    ),
    # same output size, windows one row and column apart (no zero-padded weight adds up): kept
    ((1, 3, 8, 8), [((4, 3, 3, 3), {"padding": 1}), ((4, 3, 3, 3), {"padding": (0, 0, 2, 2)})], 2),
]


@pytest.mark.parametrize(("x_shape", "specs", "left"), CASES)
def test_branches_merge_with_same_numbers(x_shape, specs, left):
    rng = np.random.default_rng(len(specs))
    x = rng.standard_normal(x_shape, dtype="float32")
    mod, weights = _branches(x_shape, specs, rng)
    assert _conv_count(ParallelConvBranches()(mod)) == left
    exe = build(apply_default_schedules(fuse(mod, TARGET), TARGET), TARGET)
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = _reference(x, weights)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_branch_read_elsewhere_is_kept():
    """A branch whose conv output is also a function output stays: merging would run it twice."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
    ones = np.ones((4, 4, 1, 1), dtype="float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.conv2d(x, relax.const(ones)))
            b = bb.emit(relax.op.nn.conv2d(x, relax.const(ones)))
            total = bb.emit(relax.op.add(a, b))
            out = bb.emit_output(relax.Tuple([total, a]))
        bb.emit_func_output(out)
    adds = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.add":
            adds.append(e)

    relax.analysis.post_order_visit(ParallelConvBranches()(bb.get())["main"], visit)
    assert len(adds) == 1  # not merged: the sum still adds the two convs
