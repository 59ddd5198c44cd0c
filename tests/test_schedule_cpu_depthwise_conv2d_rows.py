"""cpu_depthwise_conv2d_rows.DepthwiseConv2dRows: stride-1 depthwise convs vectorized along
NCHW rows, each channel plane padded once."""

from __future__ import annotations

import math

import pytest
import tvm
from tvm import relax, s_tir

from tests.kernels import (
    AVX2,
    AVX512,
    NEON,
    TARGET,
    assert_schedule_matches,
    const,
    loop_kinds,
    lowers_for,
    only_kernel,
)
from tvmflow.schedules.cpu_depthwise_conv2d_rows import DepthwiseConv2dRows


def _depthwise(c, hw, k=3, stride=1, n=1, epilogue=True, padding=None):
    def body(x):
        pad = k // 2 if padding is None else padding
        y = relax.op.nn.conv2d(x, const((c, 1, k, k)), strides=stride, padding=pad, groups=c)
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
        dict(c=8, hw=(32, 64), stride=2),  # stride 2: even and odd columns apart
        dict(c=4, hw=(28, 28), k=5, stride=2, n=2),  # 5x5, 14 -> 16 columns, batched
        dict(c=4, hw=(32, 32), stride=2, padding=(0, 0, 1, 1)),  # one-sided: odd rows
        dict(c=4, hw=(31, 31), stride=2),  # odd input rows
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
        dict(c=8, hw=(12, 12)),  # rows of 12: 4-lane vectors (16 is +33 %), DepthwiseConv2d's
        dict(c=8, hw=(48, 48), stride=3),
    ],
)
def test_narrow_or_wide_strided_rows_are_left_to_depthwise(case):
    assert DepthwiseConv2dRows().apply(_depthwise(**case), AVX512, False) is None


@pytest.mark.parametrize(("hw", "width"), [(14, 16), (28, 32)])
def test_a_slice_of_padded_rows_follows_the_tile(hw, width):
    """`conv_tiles` computes rows of 14 as 16 and slices 14 off: the slice and the epilogue
    are written from the tile's accumulators, as vectors, not in a pass of their own."""

    def body(x):
        y = relax.op.nn.conv2d(x, const((8, 1, 3, 3)), padding=(1, 1, 1, 1 + width - hw), groups=8)
        y = relax.op.strided_slice(y, axes=[3], begin=[0], end=[hw])
        return relax.op.clip(relax.op.add(y, const((1, 8, 1, 1), 1)), 0, 6)

    func = only_kernel({"x": ((1, 8, hw, hw), "float32")}, body)
    sch = DepthwiseConv2dRows().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)
    assert _one_loop_nest(sch)


def _one_loop_nest(sch):
    """Whether the scheduled kernel is a single loop nest (no epilogue pass of its own)."""
    import tvm

    return isinstance(sch.mod["main"].body.block.body, tvm.tirx.For)


@pytest.mark.parametrize("stride", [1, 2])
def test_each_plane_is_padded_once_before_its_tiles(stride):
    """The padding copy runs once per (image, channel) plane, under the parallel loop and
    outside the row tiles, so no input row is copied twice."""
    func = _depthwise(8, (32, 64), stride=stride, n=2)
    sch = DepthwiseConv2dRows().apply(func, TARGET, False)
    assert sch is not None
    writes = 0
    for name in ("pad_temp", "pad_temp_pad_const"):
        try:
            block = sch.get_sblock(name)
        except s_tir.ScheduleError:  # stride 1 pads in one block
            continue
        parallel, *inner = sch.get_loops(block)
        assert sch.get(parallel).kind == tvm.tirx.ForKind.PARALLEL
        assert int(sch.get(parallel).extent) == 2 * 8  # images x channels
        writes = max(writes, math.prod(int(sch.get(loop).extent) for loop in inner))
    rows = (32 // stride - 1) * stride + 3  # the padded rows the outputs read
    assert writes == rows * 66  # the whole padded plane per parallel iteration
    assert_schedule_matches(func, sch)


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
