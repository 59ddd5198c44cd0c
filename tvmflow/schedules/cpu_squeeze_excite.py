"""CPU rule for squeeze-excite scale kernels: a tiny GEMV whose activation scales a whole map.

A squeeze-excite block (MobileNetV3, EfficientNet) ends in a 1x1 conv over a 1x1 map (C' ->
C channels), a (hard) sigmoid, and a multiply of the block's C x H x W map by the result.
Fused, that is one kernel whose reduction makes C values and whose epilogue writes C*H*W.
`Matmul` schedules the epilogue as a pass over rows: rows of 28, 14 or 7 floats stayed
scalar (MobileNetV3's 672 x 14 x 14 scale ran at ~1 G floats/s, 0.12 ms). Here the GEMV is
vectorized over the C outputs, and the map pass runs over each channel's whole plane as one
contiguous run (vectors with a remainder), one parallel task per channel.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    dtype_bits_of_block,
    extents,
    index_vars,
    open_single_reduction,
    pick_vector,
    vector_lanes,
)

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

# The GEMV makes at most this many values (the channels of a block's map)...
MAX_SCALES = 8192
# ...and the epilogue writes at least this many per value (a map, not a bias or a reshape).
MIN_PLANE = 16


class SqueezeExcite(ScheduleRule):
    """Kernels with one GEMV block (one output dim, contiguous in the weight) whose
    injective epilogue writes a map `MIN_PLANE`+ times its size."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_single_reduction(func, target)
        if opened is None:
            return None
        sch, infos, index = opened
        main = infos[index].block_rv
        produced = _elements(sch.get(main).writes[0].source.shape)
        epilogue = [info.block_rv for info in infos[index + 1 :]]
        if produced is None or produced > MAX_SCALES or not epilogue:
            return None
        sizes = [_instances(sch, block) for block in epilogue]
        if not any(s is not None and s >= produced * MIN_PLANE for s in sizes):
            return None
        gemv = _gemv_loops(sch, main)
        if gemv is None:
            return None
        try:
            for info in infos[:index]:
                sch.compute_inline(info.block_rv)
            lanes = vector_lanes(target, dtype_bits_of_block(sch, main))
            _schedule_gemv(sch, main, *gemv, lanes)
            for block in epilogue:
                try:
                    sch.compute_inline(block)
                except ScheduleError:
                    _schedule_map(sch, block, lanes)
        except (ScheduleError, InternalError):
            return None
        return sch


def _gemv_loops(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV
) -> tuple[s_tir.schedule.LoopRV, s_tir.schedule.LoopRV] | None:
    """(output loop, reduction loop) of a GEMV block (a batch loop before them at most)
    whose weight read is contiguous in the output's iter, else None."""
    import tvm

    stmt = sch.get(block)
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    if sizes is None or len(stmt.reads) != 2:
        return None
    iters = list(stmt.iter_vars)
    reduces = [iv.iter_type == tvm.tirx.IterVar.CommReduce for iv in iters]
    spatial = [i for i, r in enumerate(reduces) if not r and sizes[i] > 1]
    reduce = [i for i, r in enumerate(reduces) if r and sizes[i] > 1]
    # the batch (images: one GEMV each) first, then the outputs, then the reduction
    if not spatial or len(spatial) > 2 or len(reduce) != 1 or spatial[-1] > reduce[0]:
        return None
    out = iters[spatial[-1]].var
    weight = [read for read in stmt.reads if _last_index_is(read, out)]
    if len(weight) != 1:
        return None
    batch = iters[spatial[0]].var if len(spatial) == 2 else None
    if batch is not None and any(v is not None and v.same_as(batch) for v in index_vars(weight[0])):
        return None  # a batched matmul: a weight per image
    return loops[spatial[-1]], loops[reduce[0]]


def _last_index_is(region: Any, var: Any) -> bool:
    found = index_vars(region)
    return bool(found) and found[-1] is not None and found[-1].same_as(var)


def _schedule_gemv(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    out: s_tir.schedule.LoopRV,
    k: s_tir.schedule.LoopRV,
    lanes: int,
) -> None:
    """out[c] = sum_k s[k] * w[k, c]: a vector of c per step of k (the weight row is
    contiguous), accumulated in registers."""
    size = extents(sch, [out])
    vector = pick_vector(size[0], lanes) if size else 1
    acc = sch.cache_write(block, 0, "local")
    c_o, c_v = sch.split(out, factors=[None, vector])
    sch.reorder(c_o, k, c_v)
    sch.reverse_compute_at(acc, c_o, preserve_unit_loops=True)
    if vector > 1:
        sch.vectorize(c_v)
    sch.decompose_reduction(block, k)


def _schedule_map(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """A channel's plane (its last two loops) as one contiguous loop: whole vectors where
    they divide it, else left to LLVM's loop vectorizer (a remainder loop); channels (and
    images) in parallel."""
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    if sizes is None or len(loops) < 3:
        return
    plane = sch.fuse(loops[-2], loops[-1])
    outer = loops[:-2]
    if (sizes[-2] * sizes[-1]) % lanes == 0:
        sch.vectorize(sch.split(plane, factors=[None, lanes])[1])
    if math.prod(sizes[:-2]) > 1:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def _instances(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int | None:
    return _elements([iv.dom.extent for iv in sch.get(block).iter_vars])


def _elements(shape: Any) -> int | None:
    import tvm

    if not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return math.prod(int(d) for d in shape)
