"""AxisNorm: softmax over a non-innermost axis (YOLOv8's DFL head), vectorized along the
contiguous axis, same results as the unscheduled kernel."""

from __future__ import annotations

import pytest
from tvm import relax

from tests.kernels import (
    AVX2,
    AVX512,
    NEON,
    TARGET,
    assert_schedule_matches,
    loop_kinds,
    lowers_for,
    only_kernel,
)
from tvmflow.schedules import kernel_rules
from tvmflow.schedules.cpu_axis_norm import AxisNorm


def _softmax(shape: tuple[int, ...], axis: int):
    return only_kernel({"x": (shape, "float32")}, lambda x: relax.op.nn.softmax(x, axis=axis))


# DFL at 320 px: 2100 anchors leave a partial last vector (partitioned per block); at 64
# columns the vectors divide them (one loop over column vectors for every block); a 2-D
# softmax over rows has no other dims; a batch of two
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((1, 16, 4, 2100), 1), ((1, 16, 4, 64), 1), ((21, 100), 0), ((2, 16, 3, 40), 1)],
    ids=str,
)
def test_softmax_over_an_outer_axis_matches_unscheduled(shape, axis):
    func = _softmax(shape, axis)
    sch = AxisNorm().apply(func, TARGET, False)
    assert sch is not None
    assert "vectorized" in loop_kinds(sch)
    assert_schedule_matches(func, sch)


def test_dfl_head_with_its_weighted_sum_epilogue():
    # YOLOv8's DFL: softmax over the 16 bins, then the 1x1 conv with weights 0..15 (here its
    # elementwise multiply part, as FuseOps leaves it next to the softmax)
    bins = relax.const(__import__("numpy").arange(16, dtype="float32").reshape(1, 16, 1, 1))
    func = only_kernel(
        {"x": ((1, 16, 4, 336), "float32")},
        lambda x: relax.op.multiply(relax.op.nn.softmax(x, axis=1), bins),
    )
    sch = AxisNorm().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


def test_other_kernels_are_not_claimed():
    last = _softmax((2, 64, 64), -1)  # RowNorm's
    plain = only_kernel({"x": ((16, 64), "float32")}, lambda x: relax.op.sum(x, axis=[0]))
    narrow = _softmax((16, 4, 20), 1)  # fewer columns than two vectors
    for func in (last, plain, narrow):
        assert AxisNorm().apply(func, AVX512, False) is None


def test_default_rules_pick_it_for_the_dfl_softmax():
    from tests.kernels import fused_module

    mod = fused_module(
        {"x": ((1, 16, 4, 2100), "float32")}, lambda x: relax.op.nn.softmax(x, axis=1)
    )
    assert set(kernel_rules(mod, TARGET).values()) == {"AxisNorm"}


def test_other_cpus():
    func = _softmax((1, 16, 4, 100), 1)
    sch = AxisNorm().apply(func, AVX2, False)
    assert sch is not None
    assert_schedule_matches(func, sch, AVX2)
    lowers_for(AxisNorm().apply(_softmax((1, 16, 4, 50), 1), NEON, False), NEON)
