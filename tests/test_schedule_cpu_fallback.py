"""cpu_fallback.Fallback: kernels no other rule claims still run in parallel, same results."""

from __future__ import annotations

from tvm import relax

from tests.kernels import (
    TARGET,
    assert_schedule_matches,
    const,
    kernel_named,
    loop_kinds,
    only_kernel,
)
from tvmflow.schedules import default_rules
from tvmflow.schedules.cpu_fallback import Fallback


def test_grouped_conv_transpose_gets_the_fallback_and_matches():
    """A reduction no rule claims (grouped conv2d is Conv2d's now: a GEMM per group)."""
    func = only_kernel(
        {"x": ((1, 8, 9, 9), "float32")},
        lambda x: relax.op.nn.conv2d_transpose(x, const((8, 3, 3, 3)), strides=2, groups=4),
    )
    claimed = [type(r).__name__ for r in default_rules(TARGET) if r.apply(func, TARGET, False)]
    assert claimed[0] == "Fallback"
    sch = Fallback().apply(func, TARGET, False)
    assert "parallel" in loop_kinds(sch)
    assert_schedule_matches(func, sch)


def test_tiny_kernels_stay_serial():
    func = only_kernel({"x": ((2, 3), "float32")}, lambda x: relax.op.sum(x, axis=[1]))
    sch = Fallback().apply(func, TARGET, False)
    assert "parallel" not in loop_kinds(sch)
    assert_schedule_matches(func, sch)


def test_reduction_over_one_element_is_not_claimed():
    """A depthwise 1x1 conv with a channel multiplier reduces over extents of 1: injective once
    normalized, but Fallback's inlining into it computed wrong values. Its weight is an input:
    DepthwiseScaleAsMultiply rewrites constant-weight ones as a multiply."""
    func = kernel_named(
        "fused_conv2d",
        {"x": ((1, 8, 6, 6), "float32"), "w": ((16, 1, 1, 1), "float32")},
        lambda x, w: relax.op.nn.relu(relax.op.nn.conv2d(x, w, groups=8)),
    )
    assert Fallback().apply(func, TARGET, False) is None
