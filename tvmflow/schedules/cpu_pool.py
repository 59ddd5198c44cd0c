"""CPU rule for pooling kernels (max / average pool over NCHW windows) with epilogues.

The fallback ran them as one loop nest over every output and window tap, after a separate
pass that writes the whole padded input: SqueezeNet's three max pools took 1.2 ms, a third of
onnxruntime's whole model. Here each (image, channel) plane is a parallel task: its padded
plane is written just before it is pooled (it stays in cache), and each output row is reduced
column by column with the window taps unrolled inside the column loop: LLVM vectorizes the
column loop and, for a strided pool, turns the taps' loads into wide loads and shuffles (its
interleaved-access groups). Taps outside the column loop (one strided gather per tap, the
output row re-read per tap) ran 1.6-2.5x slower. The epilogue (an average pool's division, a
fused activation) is applied to each finished row. Windows with a unit side (1x4 pools over
spectrogram rows) lose that loop in normalization and are claimed too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import extents, open_single_reduction

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

POOL_RULES = ("meta_schedule.pool_max", "meta_schedule.pool_avg")
# Unroll the window taps inside the column loop up to this many (a 7x7 average pool: 49).
MAX_UNROLLED_TAPS = 64


class Pool(ScheduleRule):
    """Kernels whose one reduction block is a TOPI pool (tagged with a pool schedule rule):
    the window taps are its last one or two loops, output row and column the two before."""

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
        taps = len(kinds) - len(kinds.rstrip("R"))
        if taps not in (1, 2) or "R" in kinds[:-taps] or len(kinds) - taps < 2:
            return None  # (planes..., output row, output column, window row?, window column)
        try:
            producers = [i.block_rv for i in infos[:index]]
            return _schedule(sch, block, taps, producers, infos[index + 1 :])
        except (ScheduleError, InternalError):
            return None


def _schedule(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    taps: int,
    producers: list[s_tir.schedule.SBlockRV],
    epilogue: list[object],
) -> s_tir.Schedule | None:
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    if sizes is None:
        return None
    *planes, oh, ow = loops[:-taps]
    window = loops[-taps:]
    if math.prod(sizes[-taps:]) <= MAX_UNROLLED_TAPS:
        for tap in window:
            sch.unroll(tap)
    else:  # a large window: its rows stay a loop outside the column loop
        sch.reorder(window[0], ow)
        if taps == 2 and sizes[-1] <= MAX_UNROLLED_TAPS:
            sch.unroll(window[1])
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
    sch.decompose_reduction(block, window[0])
    return sch
