"""conv_tap_regions: a dilated conv2d whose taps mostly read padding runs as per-tap 1x1
convs over their live regions, same numbers; dense ones stay as they are."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import TARGET
from tests.test_conv_dead_taps import _conv, _kernel_shapes, _reference
from tvmflow.conv_tap_regions import ConvAsTapRegions, live_outputs
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules

# (input H/W, kernel, padding, dilation, 1x1 convs after the rewrite: 0 = unchanged)
CASES = [
    (16, 3, 12, 12, 9),  # DeepLabV3's ASPP branch on a 16x16 map: 25% of taps live
    (10, 3, 6, 6, 9),
    (16, 3, 2, 2, 0),  # dense: stays one conv
]


@pytest.mark.parametrize(("size", "k", "pad", "dilation", "convs"), CASES)
def test_tap_regions_same_numbers(size, k, pad, dilation, convs):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 24, size, size), dtype="float32")
    w = rng.standard_normal((16, 24, k, k), dtype="float32")
    mod = _conv(x.shape, w, padding=pad, dilation=dilation)
    rewritten = _kernel_shapes(ConvAsTapRegions()(mod))
    assert rewritten == ([(1, 1)] * convs if convs else [(k, k)])
    exe = build(apply_default_schedules(fuse(mod, TARGET), TARGET), TARGET)
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = _reference(x, w, 1, (pad,) * 4, dilation)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_live_outputs_read_inside():
    """Exactly the outputs whose tap reads inside the input axis."""
    for size, pad, dilation in ((16, 12, 12), (5, 3, 2), (8, 0, 3)):
        out = size + 2 * pad - 2 * dilation
        for tap in range(3):
            inside = [o for o in range(out) if 0 <= o + tap * dilation - pad < size]
            assert list(live_outputs(size, out, tap, dilation, pad)) == inside
