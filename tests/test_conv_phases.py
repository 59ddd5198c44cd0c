"""conv_phases: a stride-1 dilated conv2d runs as an undilated conv over its input phases,
same numbers; convs whose phases would waste work stay dilated."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import TARGET
from tests.test_conv_dead_taps import _conv
from tvmflow.conv_phases import DilatedConvAsPhases, phase_axis
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules


def _reference(x, w, pad, dilation, groups):
    """Direct stride-1 conv over the zero-padded input, every tap (float64)."""
    top, left, bottom, right = pad
    dh, dw = dilation
    xp = np.pad(x.astype("float64"), [(0, 0), (0, 0), (top, bottom), (left, right)])
    kh, kw = w.shape[2:]
    oh, ow = xp.shape[2] - dh * (kh - 1), xp.shape[3] - dw * (kw - 1)
    per = x.shape[1] // groups
    outs = w.shape[0] // groups
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                window = xp[:, g * per : (g + 1) * per, i * dh : i * dh + oh, j * dw : j * dw + ow]
                out[:, g * outs : (g + 1) * outs] += np.einsum(
                    "nchw,oc->nohw", window, w[g * outs : (g + 1) * outs, :, i, j]
                )
    return out


def _dilations(mod):
    found = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.nn.conv2d":
            found.append(tuple(int(d) for d in e.attrs.dilation))

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


# (input shape, channels out, kernel, padding, dilation, groups, rewritten)
CASES = [
    ((1, 32, 40, 16), 64, 3, (1, 1, 1, 1), (2, 1), 1, True),  # plcmos-v2's convs, smaller
    ((1, 8, 21, 15), 8, 3, (2, 3, 2, 3), (2, 3), 1, True),  # odd height: padded, sliced
    ((2, 16, 18, 10), 32, 3, (0, 0, 0, 0), (3, 2), 2, True),  # no padding, grouped, batch 2
    ((1, 6, 16, 16), 6, 5, (4, 4, 4, 4), (2, 2), 6, False),  # depthwise: memory-bound
    ((1, 8, 16, 16), 8, 3, (12, 12, 12, 12), (12, 12), 1, False),  # ASPP on 16x16: waste
]


@pytest.mark.parametrize(("shape", "k", "kernel", "pad", "dilation", "groups", "rewritten"), CASES)
def test_phases_same_numbers(shape, k, kernel, pad, dilation, groups, rewritten):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype="float32")
    w = rng.standard_normal((k, shape[1] // groups, kernel, kernel), dtype="float32")
    mod = _conv(x.shape, w, padding=pad, dilation=dilation, groups=groups)
    assert _dilations(DilatedConvAsPhases()(mod)) == [(1, 1) if rewritten else dilation]
    exe = build(apply_default_schedules(fuse(mod, TARGET), TARGET), TARGET)
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = _reference(x, w, pad, dilation, groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_phase_axis_covers_every_output():
    """The phases compute at least every real output, and no more than one extra phase row."""
    for size in range(1, 30):
        for kernel in (1, 3, 5):
            for dilation in (1, 2, 3, 5):
                for pad in ((0, 0), (1, 1), (dilation, dilation), (2, 0)):
                    axis = phase_axis(size, kernel, dilation, pad)
                    if axis.out <= 0:
                        continue
                    assert axis.out <= axis.computed < axis.out + dilation
                    assert axis.length % dilation == 0
                    assert axis.before + size + axis.after == axis.length or dilation == 1
