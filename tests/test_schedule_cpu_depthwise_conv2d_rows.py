"""cpu_depthwise_conv2d_rows.DepthwiseConv2dRows: stride-1 depthwise convs vectorized along
NCHW rows, padding done per tile."""

from __future__ import annotations

import pytest
from tvm import relax

from tests.kernels import (
    AVX2,
    NEON,
    TARGET,
    assert_schedule_matches,
    const,
    loop_kinds,
    lowers_for,
    only_kernel,
)
from tvmflow.schedules.cpu_depthwise_conv2d_rows import DepthwiseConv2dRows


def _depthwise(c, hw, k=3, stride=1, n=1, epilogue=True):
    def body(x):
        y = relax.op.nn.conv2d(x, const((c, 1, k, k)), strides=stride, padding=k // 2, groups=c)
        if not epilogue:
            return y
        return relax.op.clip(relax.op.add(y, const((1, c, 1, 1), 1)), 0, 6)

    return only_kernel({"x": ((n, c, *hw), "float32")}, body)


@pytest.mark.parametrize(
    "case",
    [
        dict(c=8, hw=(28, 32)),  # rows of two 16-lane vectors
        dict(c=6, hw=(13, 48), k=5),  # a 5x5 kernel, rows the tile height does not divide
        dict(c=4, hw=(10, 24), epilogue=False),  # 8-lane rows; the conv writes the output
        dict(c=5, hw=(9, 16), n=3),  # batched
    ],
)
def test_rows_match_unscheduled(case):
    func = _depthwise(**case)
    sch = DepthwiseConv2dRows().apply(func, TARGET, False)
    assert sch is not None
    assert {"parallel", "vectorized", "unrolled"} <= loop_kinds(sch)
    assert_schedule_matches(func, sch)


@pytest.mark.parametrize(
    "case",
    [
        dict(c=8, hw=(28, 28)),  # rows of 28: 4-lane vectors, DepthwiseConv2d's
        dict(c=8, hw=(32, 32), stride=2),  # strided rows: measured slower here
    ],
)
def test_narrow_or_strided_rows_are_left_to_depthwise(case):
    assert DepthwiseConv2dRows().apply(_depthwise(**case), TARGET, False) is None


def test_dense_and_grouped_convs_are_not_claimed():
    for body in (
        lambda x: relax.op.nn.conv2d(x, const((16, 8, 3, 3)), padding=1),
        lambda x: relax.op.nn.conv2d(x, const((8, 2, 3, 3)), padding=1, groups=4),
    ):
        func = only_kernel({"x": ((1, 8, 32, 32), "float32")}, body)
        assert DepthwiseConv2dRows().apply(func, TARGET, False) is None


def test_design_spaces_start_from_the_default():
    func = _depthwise(8, (16, 64))
    spaces = DepthwiseConv2dRows().design_spaces(func, TARGET)
    assert len(spaces) > 1
    for sch in spaces:
        assert_schedule_matches(func, sch)


def test_other_cpus():
    func = _depthwise(4, (12, 16))
    assert_schedule_matches(func, DepthwiseConv2dRows().apply(func, AVX2, False), AVX2)
    lowers_for(DepthwiseConv2dRows().apply(func, NEON, False), NEON)
