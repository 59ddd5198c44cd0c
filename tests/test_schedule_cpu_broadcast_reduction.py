"""cpu_broadcast_reduction.BroadcastReduction: a reduction whose small result scales a larger
output (ConvNeXt-V2's GRN, a mean over channels) is computed once, and the kernel gives the
unscheduled kernel's results."""

from __future__ import annotations

import math

import pytest
import tvm
from tvm import relax

from tests.kernels import (
    AVX2,
    NEON,
    TARGET,
    assert_schedule_matches,
    const,
    lowers_for,
    only_kernel,
)
from tvmflow.schedules import default_rules
from tvmflow.schedules.cpu_broadcast_reduction import BroadcastReduction

SINGLE_CORE = tvm.target.Target({**TARGET.export(), "num-cores": 1})


def _grn_tail(c: int, hw: int):
    """GRN after its per-channel L2 norm g: x * (gamma * g / (mean_c(g) + eps)) + beta + x."""

    def body(g, x):
        nx = relax.op.divide(
            g, relax.op.add(relax.op.mean(g, axis=[1], keepdims=True), relax.const(1e-6))
        )
        scaled = relax.op.multiply(const((1, c, 1, 1)), relax.op.multiply(x, nx))
        return relax.op.add(relax.op.add(scaled, const((1, c, 1, 1), 1)), x)

    return only_kernel({"g": ((1, c, 1, 1), "float32"), "x": ((1, c, hw, hw), "float32")}, body)


def _channel_centering(c: int, hw: int):
    """A channels-first layer norm's first step: every pixel minus its mean over channels."""
    return only_kernel(
        {"x": ((1, c, hw, hw), "float32")},
        lambda x: relax.op.subtract(x, relax.op.mean(x, axis=[1], keepdims=True)),
    )


def _dfl_softmax(bins: int, anchors: int):
    """YOLOv8's distribution focal loss head: a softmax over the bins axis (strided), then
    the bins weighted."""
    return only_kernel(
        {"x": ((1, bins, 4, anchors), "float32")},
        lambda x: relax.op.multiply(relax.op.nn.softmax(x, axis=1), const((1, bins, 1, 1))),
    )


KERNELS = {
    "grn-56x56": lambda: _grn_tail(40, 56),
    "grn-7x7": lambda: _grn_tail(320, 7),
    "centering-16x16": lambda: _channel_centering(24, 16),
    "centering-14x14": lambda: _channel_centering(8, 14),
    "dfl-softmax": lambda: _dfl_softmax(16, 96),
}


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("target", [TARGET, SINGLE_CORE], ids=["cores", "one-core"])
def test_broadcast_reduction_matches_unscheduled(name, target):
    func = KERNELS[name]()
    sch = BroadcastReduction().apply(func, target, False)
    assert sch is not None
    assert_schedule_matches(func, sch, target)


def test_grn_reduction_runs_once():
    """The mean over channels is computed at the kernel's root, not under the output's loops:
    its reduction loop is not nested in any loop of the output's extent."""
    sch = BroadcastReduction().apply(_grn_tail(40, 56), TARGET, False)
    assert sch is not None
    (block,) = [b for b in _blocks(sch) if b.name_hint.endswith("red")]
    loops = sch.get_loops(sch.get_sblock(block.name_hint))
    assert math.prod(int(sch.get(loop).extent) for loop in loops) == 40  # once per channel


def _blocks(sch):
    import tvm_ffi
    from tvm import s_tir

    found: list[s_tir.stmt.SBlock] = []
    tvm_ffi.structural_walk(sch.mod["main"].body, [(s_tir.stmt.SBlock, found.append)], order="pre")
    return found


def test_row_reductions_are_left_to_other_rules():
    """A softmax's reductions vary along its rows: nothing is recomputed under them."""
    func = only_kernel({"x": ((4, 12, 64), "float32")}, lambda x: relax.op.nn.softmax(x, axis=-1))
    assert BroadcastReduction().apply(func, TARGET, False) is None


def test_rule_order_puts_it_before_dlight_reduction():
    names = [type(r).__name__ for r in default_rules(TARGET)]
    assert names.index("BroadcastReduction") < names.index("Reduction")


@pytest.mark.parametrize("target", [AVX2, NEON], ids=["avx2", "neon"])
def test_other_cpus(target):
    func = _grn_tail(40, 56)
    sch = BroadcastReduction().apply(func, target, False)
    if target is AVX2:
        assert_schedule_matches(func, sch, target)
    else:
        lowers_for(sch, target)
