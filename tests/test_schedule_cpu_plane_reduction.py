"""cpu_plane_reduction.PlaneReduction: global pools (a reduction over each contiguous plane)
give the unscheduled kernel's results, summed in independent vectors, one plane per task."""

from __future__ import annotations

import pytest
from tvm import relax

from tests.kernels import (
    AVX2,
    NEON,
    TARGET,
    assert_schedule_matches,
    loop_kinds,
    lowers_for,
    only_kernel,
)
from tvmflow.schedules.cpu_plane_reduction import PlaneReduction


def _mean(x):
    return relax.op.mean(x, axis=[2, 3], keepdims=True)


REDUCTIONS = {
    # EfficientNet's squeeze-excite pool: 3136 = 49 steps of 4 x 16 lanes
    "mean-56x56": ((1, 24, 56, 56), _mean),
    "mean-14x14": ((1, 16, 14, 14), _mean),  # 196: 4-lane vectors
    "max-batched": ((2, 5, 16, 16), lambda x: relax.op.max(x, axis=[2, 3])),
    "mean-sigmoid": ((1, 8, 32, 32), lambda x: relax.op.sigmoid(_mean(x))),
    "sum-last-axis": ((1, 12, 256), lambda x: relax.op.sum(x, axis=[2])),
}


@pytest.mark.parametrize("name", REDUCTIONS)
def test_plane_reduction_matches_unscheduled(name):
    shape, body = REDUCTIONS[name]
    func = only_kernel({"x": (shape, "float32")}, body)
    sch = PlaneReduction().apply(func, TARGET, False)
    assert sch is not None
    assert {"parallel", "vectorized"} <= loop_kinds(sch)
    assert_schedule_matches(func, sch)


@pytest.mark.parametrize(
    ("shape", "body"),
    [
        ((1, 64, 7, 7), _mean),  # 49: no 4-lane vectors, dlight's Reduction takes it
        ((1, 64, 16, 16), lambda x: relax.op.sum(x, axis=[1])),  # across planes: strided
    ],
)
def test_other_reductions_are_not_claimed(shape, body):
    assert (
        PlaneReduction().apply(only_kernel({"x": (shape, "float32")}, body), TARGET, False) is None
    )


@pytest.mark.parametrize("target", [AVX2, NEON], ids=["avx2", "neon"])
def test_plane_reduction_on_other_cpus(target):
    shape, body = REDUCTIONS["mean-56x56"]
    func = only_kernel({"x": (shape, "float32")}, body, target)
    sch = PlaneReduction().apply(func, target, False)
    assert sch is not None
    if target is AVX2:
        assert_schedule_matches(func, sch, AVX2)
    lowers_for(sch, target)
