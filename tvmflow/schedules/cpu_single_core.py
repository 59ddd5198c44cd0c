"""Kernels for a one-core target (`num-cores = 1`): every CPU rule's schedule without its
parallel loops.

TVM runs a parallel loop by outlining its body into a closure handed to the thread pool, even
when the pool has one thread: each kernel call then pays the launch (about 6 us here), the
closure's pointers lose the kernel's no-alias guarantees, and scratch buffers inside the
loop (a depthwise conv's padded plane, a register tile's accumulators) are allocated per
iteration instead of once. On one thread that cost MobileNetV2 24% of its CPU time. An
artifact built for one core (the target's `num-cores`, which `tvmflow.targets` sets to the
host's cores unless a preset fixes it) therefore gets each rule's schedule replayed without
its `parallel` instructions: the same loops, run in order.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tvm.s_tir.dlight import ScheduleRule

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

log = logging.getLogger(__name__)


def single_core(target: tvm.target.Target) -> bool:
    """Whether the target declares one core (its kernels then run serially)."""
    cores = target.attrs.get("num-cores")
    return cores is not None and int(cores) == 1


class SingleCore(ScheduleRule):
    """`rule`, with the parallel loops of what it schedules run serially."""

    def __init__(self, rule: ScheduleRule) -> None:
        self.rule = rule

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | list[s_tir.Schedule] | None:
        space = self.rule.apply(func, target, tunable)
        if space is None:
            return None
        if isinstance(space, list):
            return [serial(func, sch) for sch in space]
        return serial(func, space)

    def design_spaces(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target
    ) -> list[s_tir.Schedule]:
        """The rule's tuning spaces (none if it has no knobs), serial too."""
        spaces = getattr(self.rule, "design_spaces", None)
        return [serial(func, sch) for sch in spaces(func, target)] if spaces else []

    def __repr__(self) -> str:
        return f"SingleCore({type(self.rule).__name__})"


def serial(func: tvm.tirx.PrimFunc, sch: s_tir.Schedule) -> s_tir.Schedule:
    """`sch` replayed on `func` without its `Parallel` instructions (nothing uses their
    result, so the rest of the trace applies unchanged); `sch` itself if the replay fails
    (a schedule built outside its trace), which is slower on one thread but correct."""
    import tvm
    from tvm import s_tir
    from tvm.error import InternalError

    trace = sch.trace
    if trace is None or not any(i.kind.name == "Parallel" for i in trace.insts):
        return sch
    replayed = s_tir.Schedule(tvm.IRModule({"main": func}))
    try:
        serial_trace(trace).apply_to_schedule(replayed, remove_postproc=False)
    except (s_tir.ScheduleError, InternalError, ValueError, RuntimeError) as exc:
        log.debug("single core: a kernel keeps its parallel loops (replay failed: %s)", exc)
        return sch
    return replayed


def serial_trace(trace: s_tir.schedule.Trace) -> s_tir.schedule.Trace:
    """`trace` without its `Parallel` instructions (a tuning record's too: compile applies
    records for a one-core target through this)."""
    from tvm import s_tir

    kept = [i for i in trace.insts if i.kind.name != "Parallel"]
    decisions = {i: d for i, d in trace.decisions.items() if i.kind.name != "Parallel"}
    return s_tir.schedule.Trace(kept, decisions)
