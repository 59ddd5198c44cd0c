"""Rules as design spaces: the knobs of tvmflow's CPU rules as MetaSchedule sampling
instructions, whose default decisions reproduce the rule's schedule exactly."""

from __future__ import annotations

import pytest
import tvm
from tvm import relax, s_tir
from tvm_ffi import structural_equal

from tests.kernels import TARGET, assert_schedule_matches, const, only_kernel
from tvmflow.schedules import default_rules, design_spaces


def _conv(cin: int, cout: int, hw: int, stride: int = 1) -> tvm.tirx.PrimFunc:
    def body(x: relax.Expr) -> relax.Expr:
        y = relax.op.nn.conv2d(x, const((cout, cin, 3, 3)), strides=stride, padding=1)
        return relax.op.nn.relu(relax.op.add(y, const((1, cout, 1, 1), 1)))

    return only_kernel({"x": ((1, cin, hw, hw), "float32")}, body)


def _depthwise(c: int, hw: int, stride: int = 1) -> tvm.tirx.PrimFunc:
    def body(x: relax.Expr) -> relax.Expr:
        w = const((c, 1, 3, 3))
        y = relax.op.nn.conv2d(x, w, strides=stride, padding=1, groups=c)
        return relax.op.clip(relax.op.add(y, const((1, c, 1, 1), 1)), 0, 6)

    return only_kernel({"x": ((1, c, hw, hw), "float32")}, body)


def _pointwise(cin: int, cout: int, hw: int) -> tvm.tirx.PrimFunc:
    def body(x: relax.Expr) -> relax.Expr:
        y = relax.op.nn.conv2d(x, const((cout, cin, 1, 1)))
        return relax.op.clip(relax.op.add(y, const((1, cout, 1, 1), 1)), 0, 6)

    return only_kernel({"x": ((1, cin, hw, hw), "float32")}, body)


def _dense(m: int, k: int, n: int) -> tvm.tirx.PrimFunc:
    return only_kernel(
        {"x": ((m, k), "float32")},
        lambda x: relax.op.add(relax.op.matmul(x, const((k, n))), const((n,), 1)),
    )


KERNELS = {
    "conv 16->32 14x14": lambda: _conv(16, 32, 14),
    "conv 8->48 17x17 s2": lambda: _conv(8, 48, 17, stride=2),
    "dense 56x64x96": lambda: _dense(56, 64, 96),
    "depthwise 96 24x24 s2": lambda: _depthwise(96, 24, stride=2),  # rows of 12: channel vectors
    "pointwise 16->48 28x28": lambda: _pointwise(16, 48, 28),
    "depthwise rows 32 32x32": lambda: _depthwise(32, 32),
}


def _default(func: tvm.tirx.PrimFunc) -> s_tir.Schedule:
    """What compile builds: the first default rule that applies."""
    for rule in default_rules(TARGET):
        sch = rule.apply(func, TARGET, False)
        if sch is not None:
            assert isinstance(sch, s_tir.Schedule)
            return sch
    raise AssertionError("no rule applies")


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_default_decisions_reproduce_the_rule_schedule(name: str) -> None:
    func = KERNELS[name]()
    spaces = design_spaces(func, TARGET)
    assert spaces, "the rule that claims this kernel exposes no knobs"
    first = spaces[0]
    assert first.trace is not None
    assert any(i.kind.name == "SamplePerfectTile" for i in first.trace.insts)
    assert structural_equal(first.mod, _default(func).mod)
    # replaying the trace with its recorded (default) decisions gives the same schedule again
    replayed = s_tir.Schedule(tvm.IRModule({"main": func}))
    first.trace.apply_to_schedule(replayed, remove_postproc=False)
    assert structural_equal(replayed.mod, _default(func).mod)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_sampled_decisions_compute_the_same_result(name: str) -> None:
    """Every design space, replayed with freshly sampled decisions, stays numerically equal."""
    func = KERNELS[name]()
    spaces = design_spaces(func, TARGET)
    assert len(spaces) >= 2  # several tile widths to start from
    seen = set()
    for i, space in enumerate(spaces):
        assert space.trace is not None
        for seed in (1, 2):
            sch = s_tir.Schedule(tvm.IRModule({"main": func}), seed=seed + 10 * i)
            s_tir.Trace(space.trace.insts, {}).apply_to_schedule(sch, remove_postproc=False)
            assert sch.trace is not None
            seen.add(str(list(sch.trace.decisions.values())))
            assert_schedule_matches(func, sch)
    assert len(seen) > 1  # the samples really vary the schedule


def test_kernels_without_knobs_keep_the_generic_space() -> None:
    relu = only_kernel({"x": ((64, 64), "float32")}, relax.op.nn.relu)
    assert design_spaces(relu, TARGET) == []
