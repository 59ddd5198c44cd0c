"""cpu_single_core.SingleCore: a one-core target's kernels keep each rule's schedule, serially."""

from __future__ import annotations

import pytest
import tvm
from tvm import relax

from tests.kernels import TARGET, assert_schedule_matches, const, loop_kinds, only_kernel
from tvmflow.schedules import default_rules, design_spaces
from tvmflow.schedules.cpu_single_core import SingleCore, single_core

ONE_CORE = tvm.target.Target({**TARGET.export(), "num-cores": 1})
FOUR_CORES = tvm.target.Target({**TARGET.export(), "num-cores": 4})


def _kernels():
    """A depthwise conv (padded plane + row tiles), a 1x1 conv (GEMM) and a softmax."""
    yield only_kernel(
        {"x": ((1, 8, 28, 32), "float32")},
        lambda x: relax.op.clip(
            relax.op.nn.conv2d(x, const((8, 1, 3, 3)), padding=1, groups=8), 0, 6
        ),
    )
    yield only_kernel(
        {"x": ((1, 16, 28, 28), "float32")},
        lambda x: relax.op.nn.conv2d(x, const((32, 16, 1, 1))),
    )
    yield only_kernel({"x": ((64, 128), "float32")}, lambda x: relax.op.nn.softmax(x))


def _schedule(func, target):
    with target:
        for rule in default_rules(target):
            sch = rule.apply(func, target, False)
            if sch is not None:
                return rule, sch
    raise AssertionError("no rule applies")


@pytest.mark.parametrize("index", range(3))
def test_one_core_kernels_are_the_rules_schedules_without_parallel_loops(index):
    func = list(_kernels())[index]
    rule, sch = _schedule(func, ONE_CORE)
    assert isinstance(rule, SingleCore)
    _, multi = _schedule(func, FOUR_CORES)
    assert "parallel" not in loop_kinds(sch)
    # the same loops otherwise: only the parallel kind is gone
    assert loop_kinds(multi) - {"parallel"} <= loop_kinds(sch) | {"serial"}
    assert_schedule_matches(func, sch, ONE_CORE)


def test_other_targets_keep_their_parallel_loops():
    assert single_core(ONE_CORE) and not single_core(FOUR_CORES)
    func = next(_kernels())
    rule, sch = _schedule(func, FOUR_CORES)
    assert not isinstance(rule, SingleCore)
    assert "parallel" in loop_kinds(sch)


def test_tuning_spaces_are_serial_too():
    func = next(_kernels())
    spaces = design_spaces(func, ONE_CORE)
    assert len(spaces) > 1
    for sch in spaces:
        assert "parallel" not in loop_kinds(sch)
        assert_schedule_matches(func, sch, ONE_CORE)


def test_a_schedule_whose_trace_does_not_replay_is_kept_as_it_is():
    """`serial` replays the trace on the kernel; where that fails (here: a trace of another
    kernel) the parallel schedule stays, correct if slower on one thread."""
    from tvmflow.schedules.cpu_single_core import serial

    depthwise, pointwise, _ = _kernels()
    _, sch = _schedule(depthwise, FOUR_CORES)
    assert serial(pointwise, sch) is sch
    assert "parallel" not in loop_kinds(serial(depthwise, sch))
