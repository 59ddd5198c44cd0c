"""CPU rule for pooling kernels (max / average pool over NCHW windows) with epilogues.

The fallback ran them as one loop nest over every output and window tap, after a separate
pass that writes the whole padded input: SqueezeNet's three max pools took 1.2 ms, a third of
onnxruntime's whole model. Here each (image, channel) plane is a parallel task: its padded
plane is written just before it is pooled (it stays in cache), and each output row is reduced
tap by tap in place (the row stays in L1), with the output column innermost so LLVM
vectorizes it (strided loads for strided pools, a remainder loop for odd widths). The
epilogue (an average pool's division, a fused activation) is applied to each finished row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import extents, open_single_reduction

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

POOL_RULES = ("meta_schedule.pool_max", "meta_schedule.pool_avg")


class Pool(ScheduleRule):
    """Kernels whose one reduction block is a TOPI pool (tagged with a pool schedule rule):
    the window taps are its last two loops, output row and column the two before."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_single_reduction(func, target)
        if opened is None:
            return None
        sch, infos, index = opened
        block = infos[index].block_rv
        # TOPI tags a max pool's reduction, an average pool's division after it
        tags = {str(sch.get(i.block_rv).annotations.get("schedule_rule", "")) for i in infos}
        if not tags & set(POOL_RULES):
            return None
        kinds = infos[index].dom_kind()
        if not kinds.endswith("SSRR") or "R" in kinds[:-2]:
            return None  # (planes..., output row, output column, window row, window column)
        try:
            return _schedule(sch, block, [i.block_rv for i in infos[:index]], infos[index + 1 :])
        except (ScheduleError, InternalError):
            return None


def _schedule(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    producers: list[s_tir.schedule.SBlockRV],
    epilogue: list[object],
) -> s_tir.Schedule | None:
    loops = sch.get_loops(block)
    if extents(sch, loops) is None:
        return None
    *planes, oh, ow, rh, rw = loops
    sch.reorder(oh, rh, rw, ow)
    remaining = []
    for info in epilogue:  # intermediate blocks into their consumers, the rest row by row
        try:
            sch.compute_inline(info.block_rv)  # type: ignore[attr-defined]
        except ScheduleError:
            remaining.append(info.block_rv)  # type: ignore[attr-defined]
    for consumer in remaining:
        sch.reverse_compute_at(consumer, oh, preserve_unit_loops=True)
    plane = sch.fuse(*planes) if len(planes) > 1 else planes[0] if planes else oh
    sch.parallel(plane)
    for producer in producers:  # the padding: one plane at a time, just before it is pooled
        sch.compute_at(producer, plane, preserve_unit_loops=True)
    sch.decompose_reduction(block, rh)
    return sch
