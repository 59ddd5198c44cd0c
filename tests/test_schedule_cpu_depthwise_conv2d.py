"""cpu_depthwise_conv2d.DepthwiseConv2d: channel-vectorized depthwise conv, same results."""

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
from tvmflow.schedules.cpu_depthwise_conv2d import DepthwiseConv2d


def _depthwise(c, hw, k=3, stride=1, relu6=True, n=1):
    def body(x):
        y = relax.op.nn.conv2d(x, const((c, 1, k, k)), strides=stride, padding=k // 2, groups=c)
        y = relax.op.add(y, const((1, c, 1, 1), 1))
        return relax.op.clip(y, 0, 6) if relu6 else y

    return only_kernel({"x": ((n, c, hw[0], hw[1]), "float32")}, body)


@pytest.mark.parametrize(
    "case",
    [
        dict(c=32, hw=(9, 9), stride=2),
        dict(c=48, hw=(14, 14)),
        dict(c=24, hw=(15, 13), k=5, relu6=False),
        dict(c=7, hw=(10, 11)),
        dict(c=20, hw=(7, 7), stride=2),
        # batched: the batch loop joins the parallel tiles (at batch 8 these kernels used
        # to fall to dlight's generic reduction rule)
        dict(c=16, hw=(9, 7), n=3),
        dict(c=24, hw=(11, 11), stride=2, n=2),
    ],
)
def test_depthwise_matches_unscheduled(case):
    func = _depthwise(**case)
    sch = DepthwiseConv2d().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


def test_channels_are_vectorized():
    sch = DepthwiseConv2d().apply(_depthwise(32, (8, 8)), TARGET, False)
    assert {"parallel", "vectorized", "unrolled"} <= loop_kinds(sch)


def test_dense_and_grouped_convs_are_not_claimed():
    dense = only_kernel(
        {"x": ((1, 8, 9, 9), "float32")},
        lambda x: relax.op.nn.conv2d(x, const((16, 8, 3, 3)), padding=1),
    )
    grouped = only_kernel(
        {"x": ((1, 8, 9, 9), "float32")},
        lambda x: relax.op.nn.conv2d(x, const((8, 2, 3, 3)), padding=1, groups=4),
    )
    for func in (dense, grouped):
        assert DepthwiseConv2d().apply(func, TARGET, False) is None


@pytest.mark.parametrize("n", [1, 2])
def test_other_cpus(n):
    func = _depthwise(16, (9, 9), stride=2, n=n)
    assert_schedule_matches(func, DepthwiseConv2d().apply(func, AVX2, False), AVX2)
    lowers_for(DepthwiseConv2d().apply(func, NEON, False), NEON)
