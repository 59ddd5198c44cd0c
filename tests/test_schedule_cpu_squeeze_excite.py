"""cpu_squeeze_excite.SqueezeExcite: a squeeze-excite block's last 1x1 conv, (hard) sigmoid
and map scaling give the unscheduled kernel's results, the GEMV and the map vectorized."""

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
from tvmflow.schedules.cpu_squeeze_excite import SqueezeExcite


def _excite(squeezed, channels, hw, hard=True, batch=1, target=TARGET):
    def body(s, x):
        y = relax.op.add(
            relax.op.nn.conv2d(s, const((channels, squeezed, 1, 1))), const((1, channels, 1, 1), 1)
        )
        if hard:  # MobileNetV3's hardsigmoid
            y = relax.op.divide(
                relax.op.clip(relax.op.add(y, relax.const(3.0)), 0, 6), relax.const(6.0)
            )
        else:
            y = relax.op.sigmoid(y)
        return relax.op.multiply(y, x)

    s_shape: tuple[int, ...] = (batch, squeezed, 1, 1)
    x_shape: tuple[int, ...] = (batch, channels, hw, hw)
    return only_kernel({"s": (s_shape, "float32"), "x": (x_shape, "float32")}, body, target)


@pytest.mark.parametrize(
    "case",
    [
        dict(squeezed=32, channels=120, hw=28),  # MobileNetV3: 120 -> 128 channels sliced back
        dict(squeezed=8, channels=48, hw=14, hard=False),  # EfficientNet's sigmoid
        dict(squeezed=12, channels=40, hw=7),  # a plane of 49: LLVM's remainder loop
        dict(squeezed=16, channels=32, hw=14, batch=3),  # a GEMV per image
    ],
)
def test_squeeze_excite_matches_unscheduled(case):
    func = _excite(**case)
    sch = SqueezeExcite().apply(func, TARGET, False)
    assert sch is not None
    assert {"parallel", "vectorized"} <= loop_kinds(sch)
    assert_schedule_matches(func, sch)


def test_other_gemvs_are_left_to_matmul():
    fc = only_kernel(
        {"s": ((1, 64, 1, 1), "float32")},
        lambda s: relax.op.nn.relu(relax.op.nn.conv2d(s, const((16, 64, 1, 1)))),
    )  # the squeeze FC: no map to scale
    assert SqueezeExcite().apply(fc, TARGET, False) is None


@pytest.mark.parametrize("target", [AVX2, NEON], ids=["avx2", "neon"])
def test_squeeze_excite_on_other_cpus(target):
    func = _excite(16, 32, 14, target=target)
    sch = SqueezeExcite().apply(func, target, False)
    assert sch is not None
    if target is AVX2:
        assert_schedule_matches(func, sch, AVX2)
    lowers_for(sch, target)
