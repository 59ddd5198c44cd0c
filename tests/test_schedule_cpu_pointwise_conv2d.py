"""cpu_pointwise_conv2d.PointwiseConv2d: 1x1 convs as a GEMM vectorized along the NCHW plane."""

from __future__ import annotations

import re

import pytest
import tvm
from tvm import relax

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
from tvmflow.schedules.cpu_pointwise_conv2d import PointwiseConv2d


def _pointwise(cin, cout, hw, batch=1, epilogue="relu6", stride=1, pad=0):
    def body(x, *rest):
        y = relax.op.nn.conv2d(x, const((cout, cin, 1, 1)), strides=stride, padding=pad)
        if epilogue == "none":
            return y
        y = relax.op.add(y, const((1, cout, 1, 1), 1))
        if epilogue == "residual":  # MobileNetV2's projection conv + skip connection
            return relax.op.add(y, rest[0])
        return relax.op.clip(y, 0, 6)

    inputs = {"x": ((batch, cin, *hw), "float32")}
    if epilogue == "residual":
        inputs["skip"] = ((batch, cout, *hw), "float32")
    return only_kernel(inputs, body)


@pytest.mark.parametrize(
    "case",
    [
        dict(cin=16, cout=48, hw=(28, 28)),  # 2x7 tiles: one tile per 4 rows
        dict(cin=24, cout=8, hw=(32, 32), epilogue="residual"),  # 4-vector tiles across rows
        dict(cin=8, cout=12, hw=(24, 40), epilogue="none"),  # the conv writes the output,
        # through a copy whose domain keeps the unit batch dim; 64-wide tiles cross rows
        dict(cin=6, cout=10, hw=(32, 28), batch=2),
    ],
)
def test_pointwise_matches_unscheduled(case):
    func = _pointwise(**case)
    sch = PointwiseConv2d().apply(func, TARGET, False)
    assert sch is not None
    assert {"parallel", "vectorized", "unrolled"} <= loop_kinds(sch)
    assert "layout_rewrite_preproc" in sch.mod["main"].script()
    assert_schedule_matches(func, sch)


@pytest.mark.parametrize(
    "case",
    [
        dict(cin=16, cout=32, hw=(14, 14)),  # plane 196: not whole vectors, Conv2d's
        dict(cin=16, cout=32, hw=(28, 28), stride=2),  # strided: the plane is not contiguous
        dict(cin=16, cout=32, hw=(28, 28), pad=1),  # padded
        dict(cin=160, cout=32, hw=(28, 28)),  # panel beyond L1, 2-row tiles: Conv2d is faster
    ],
)
def test_other_convs_are_left_to_conv2d(case):
    assert PointwiseConv2d().apply(_pointwise(**case), AVX512, False) is None


def test_3x3_and_depthwise_are_not_claimed():
    for body in (
        lambda x: relax.op.nn.conv2d(x, const((16, 8, 3, 3)), padding=1),
        lambda x: relax.op.nn.conv2d(x, const((8, 1, 3, 3)), padding=1, groups=8),
    ):
        func = only_kernel({"x": ((1, 8, 32, 32), "float32")}, body)
        assert PointwiseConv2d().apply(func, TARGET, False) is None


def test_design_spaces_start_from_the_default():
    func = _pointwise(16, 48, (28, 28))
    spaces = PointwiseConv2d().design_spaces(func, TARGET)
    assert spaces
    for sch in spaces:
        assert_schedule_matches(func, sch)


def test_tiles_crossing_rows_keep_the_accumulator_in_registers():
    """At 40x40 a 64-wide tile crosses rows: the epilogue must still read the accumulator
    at the fused index (a row // column sum there left the accumulator in memory)."""
    func = _pointwise(16, 16, (40, 40))
    sch = PointwiseConv2d().apply(func, TARGET, False)
    assert sch is not None
    indices = re.findall(r"_local\[([^\]]*)\]", sch.mod["main"].script())
    assert indices and not any("//" in index or "%" in index for index in indices)
    assert_schedule_matches(func, sch)


def test_panels_beyond_l1_are_staged_per_plane_tile():
    """256 input channels x a 64-wide tile is a 64 KiB panel: copied contiguously once per
    plane tile (under the tile loop), then streamed by each channel tile."""
    func = _pointwise(256, 16, (32, 32), epilogue="residual")
    sch = PointwiseConv2d().apply(func, AVX512, False)
    assert sch is not None
    copy = sch.get_sblock("x_global")
    assert [int(d) for d in sch.get(copy).writes[0].source.shape] == [1, 256, 1024]
    (tile_loop,) = sch.get_loops(copy)[:1]
    assert sch.get(tile_loop).kind == tvm.tirx.ForKind.PARALLEL
    assert_schedule_matches(func, sch, AVX512)


def test_other_cpus():
    func = _pointwise(8, 16, (16, 16))
    assert_schedule_matches(func, PointwiseConv2d().apply(func, AVX2, False), AVX2)
    lowers_for(PointwiseConv2d().apply(func, NEON, False), NEON)
