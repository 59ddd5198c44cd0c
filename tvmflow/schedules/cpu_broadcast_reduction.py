"""CPU rule for reductions whose (small) result is broadcast over a larger output: ConvNeXt-V2's
GRN (`x * (gamma * g / (mean_c(g) + eps)) + beta + x`, the mean over channels of a per-channel
norm), or a mean over channels subtracted from every pixel (a channels-first layer norm).

TVM's `dlight.cpu.Reduction` puts every block under the output's leading spatial loops, so a
reduction whose result does not vary along them is recomputed for every output element: the
GRN kernel summed its 160 channel norms once per pixel and channel (3.1 ms of
convnextv2_atto's 17). Here each block is computed once, at the kernel's root: injective
blocks as large as the output are inlined into it (one pass over memory), smaller ones (the
per-channel scale) stay as their own short loops, reductions run before them with the
contiguous axis of their input vectorized, and the output is scheduled like an elementwise
kernel.
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
    open_reduction_epilogue,
    schedule_spatial,
    vector_lanes,
)

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir


class BroadcastReduction(ScheduleRule):
    """Kernels whose last block is injective and that hold a reduction block dlight's
    Reduction rule would recompute in every iteration of the output's leading loops."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_reduction_epilogue(func, target)
        if opened is None:
            return None
        sch, infos = opened
        if not _recomputed(sch, infos, func, target):
            return None
        try:
            return _schedule(sch, infos, target)
        except (ScheduleError, InternalError):
            return None


def _recomputed(
    original: s_tir.Schedule, infos: list[Any], func: tvm.tirx.PrimFunc, target: tvm.target.Target
) -> bool:
    """Whether dlight's Reduction schedule runs some reduction block more often than the
    kernel needs it (its loops, enclosing ones included, iterate more than unscheduled).
    `original`: the kernel, normalized and not yet scheduled."""
    from tvm import s_tir
    from tvm.s_tir.dlight.cpu import Reduction

    names = [original.get(info.block_rv).name_hint for info in infos if not info.is_injective()]
    scheduled = Reduction().apply(func, target, False)
    if not isinstance(scheduled, s_tir.Schedule):
        return False
    for name in names:
        try:
            before = original.get_loops(original.get_sblock(name))
            after = scheduled.get_loops(scheduled.get_sblock(name))
        except (ScheduleError, InternalError, ValueError):
            return False
        sizes = (extents(original, before), extents(scheduled, after))
        if sizes[0] is None or sizes[1] is None:
            return False
        if math.prod(sizes[1]) > math.prod(sizes[0]):
            return True
    return False


def _written(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int | None:
    """Elements of the buffer a block writes (None when symbolic)."""
    stmt = sch.get(block)
    if len(stmt.writes) != 1:
        return None
    shape = stmt.writes[0].source.shape
    if not all(hasattr(s, "value") for s in shape):
        return None
    return math.prod(int(s.value) for s in shape)


def _schedule(sch: s_tir.Schedule, infos: list[Any], target: tvm.target.Target) -> s_tir.Schedule:
    from tvmflow.schedules.cpu_elementwise import fuse_contiguous_tail

    last = infos[-1].block_rv
    size = _written(sch, last)
    for info in reversed(infos[:-1]):
        if info.is_injective() and _written(sch, info.block_rv) == size:
            sch.compute_inline(info.block_rv)
    for info in infos[:-1]:
        if not info.is_injective():
            _vectorize_strided(sch, info.block_rv, target)
    lanes = vector_lanes(target, dtype_bits_of_block(sch, last))
    fuse_contiguous_tail(sch, last, lanes)
    schedule_spatial(sch, last, lanes)
    return sch


def _vectorize_strided(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, target: tvm.target.Target
) -> None:
    """A reduction over a strided axis (a mean over channels: its input's contiguous dims are
    spatial ones): the reduced loops go outside the contiguous spatial loops, fused into one
    loop that adds whole vectors of partial results. Other reductions stay serial (the
    small ones this rule sees)."""
    from tvmflow.schedules.cpu_elementwise import contiguous_run

    stmt = sch.get(block)
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    kinds = ["S" if int(iv.iter_type) == 0 else "R" for iv in stmt.iter_vars]
    if sizes is None or len(kinds) != len(loops) or "R" not in kinds:
        return
    first = kinds.index("R")
    if first == 0 or "S" in kinds[first:]:
        return
    iters = [iv.var for iv in stmt.iter_vars]
    tail = contiguous_run(stmt, iters[:first], sizes[:first])
    if math.prod(sizes[first - tail : first]) < 2:
        return
    spatial = loops[first - tail : first]
    sch.reorder(*loops[first:], *spatial)
    run = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    lanes = vector_lanes(target, dtype_bits_of_block(sch, block))
    if math.prod(sizes[first - tail : first]) % lanes == 0:
        _, vec = sch.split(run, factors=[None, lanes])
        sch.vectorize(vec)
    sch.decompose_reduction(block, loops[first])
