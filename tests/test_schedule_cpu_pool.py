"""cpu_pool.Pool: max / average pools (padding, ceil mode, epilogues) give the unscheduled
kernel's results, one plane per parallel task."""

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
from tvmflow.schedules.cpu_pool import Pool

POOLS = {
    # SqueezeNet's first max pool: 111 columns, ceil mode (a padded border column)
    "max-ceil": ((1, 64, 111, 111), lambda x: relax.op.nn.max_pool2d(x, 3, 2, ceil_mode=True)),
    "max-pad": ((2, 5, 13, 9), lambda x: relax.op.nn.max_pool2d(x, 3, 2, padding=1)),
    "avg-pad": (
        (1, 8, 14, 14),
        lambda x: relax.op.nn.avg_pool2d(x, 3, 1, padding=1, count_include_pad=False),
    ),
    "avg-relu": (
        (1, 6, 16, 10),
        lambda x: relax.op.nn.relu(relax.op.nn.avg_pool2d(x, (2, 3), (2, 1))),
    ),
    # PLCMOS's spectrogram pools: a 1x4 window (its unit row loop normalizes away), odd width
    "max-row": ((1, 3, 5, 257), lambda x: relax.op.nn.max_pool2d(x, (1, 4), (1, 4))),
    "max-column": ((1, 3, 17, 6), lambda x: relax.op.nn.max_pool2d(x, (4, 1), (4, 1))),
    # windows past MAX_UNROLLED_TAPS keep their row loop outside the column loop
    "avg-large": ((1, 2, 20, 20), lambda x: relax.op.nn.avg_pool2d(x, 9, 1, padding=4)),
    "max-wide": ((1, 2, 3, 150), lambda x: relax.op.nn.max_pool2d(x, (1, 70), (1, 10))),
}


@pytest.mark.parametrize("name", POOLS)
def test_pool_matches_unscheduled(name):
    shape, body = POOLS[name]
    func = only_kernel({"x": (shape, "float32")}, body)
    sch = Pool().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)
    assert "parallel" in loop_kinds(sch)
    # small windows: the taps unrolled inside the column loop (LLVM vectorizes across them)
    assert ("unrolled" in loop_kinds(sch)) == (name != "max-wide")


@pytest.mark.parametrize("target", [AVX2, NEON], ids=["avx2", "neon"])
def test_pool_lowers_for_other_targets(target):
    shape, body = POOLS["max-ceil"]
    sch = Pool().apply(only_kernel({"x": (shape, "float32")}, body, target), target, False)
    assert sch is not None
    lowers_for(sch, target)


def test_other_reductions_are_not_claimed():
    mean = only_kernel({"x": ((1, 8, 7, 7), "float32")}, lambda x: relax.op.mean(x, [2, 3]))
    assert Pool().apply(mean, TARGET, False) is None
