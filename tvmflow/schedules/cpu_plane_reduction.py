"""CPU rule for reductions over each plane of a tensor (global pools: mean / max over H, W).

Squeeze-excite blocks (EfficientNet, MobileNetV3, MNASNet) and classifier heads average every
channel plane. TVM's `dlight.cpu.Reduction` summed each plane as one serial chain, an add
waiting for the previous one: EfficientNet-B0's 144 x 56 x 56 mean ran at ~8 GB/s (0.2 ms;
its eleven means were ~8 % of the model's kernel time). Here each plane is a parallel task
whose contiguous elements are summed into ACCUMULATORS independent vectors (rfactor), which
a short pass then combines, with the epilogue (a mean's division) applied per plane.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    dtype_bits_of_block,
    extents,
    index_vars,
    open_single_reduction,
    vector_lanes,
)

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

# Independent vector accumulators per plane, most first: a chain of adds on each would wait
# on the add latency (4 cycles) instead of the loads.
ACCUMULATORS = (4, 2, 1)


class PlaneReduction(ScheduleRule):
    """Kernels with one reduction block over the innermost (contiguous) axes of its input,
    whose planes are whole vectors; injective producers are inlined, epilogues follow."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_single_reduction(func, target)
        if opened is None:
            return None
        sch, infos, index = opened
        main = infos[index]
        kinds = main.dom_kind()
        if "R" not in kinds or "S" in kinds[kinds.index("R") :] or "S" not in kinds:
            return None  # spatial planes first, then the reduced axes
        block = main.block_rv
        loops = [it.loop_rv for it in main.iters]
        sizes = extents(sch, loops)
        if sizes is None or not _reads_planes(sch, block, kinds.index("R")):
            return None
        plane = math.prod(sizes[kinds.index("R") :])
        shape = _chunk(plane, vector_lanes(target, dtype_bits_of_block(sch, block)))
        if shape is None:
            return None
        try:
            return _schedule(sch, infos, index, *shape)
        except (ScheduleError, InternalError):
            return None


def _chunk(plane: int, lanes: int) -> tuple[int, int] | None:
    """(elements summed per step, vector width) for a plane: the widest vectors that divide
    it (a 14 x 14 plane takes 4-lane ones), the most accumulators that still leave several
    steps; None below 4-lane vectors (7 x 7: left to `dlight.cpu.Reduction`)."""
    widths = [w for w in (lanes, lanes // 2, lanes // 4) if w >= 4 and plane % w == 0]
    for width in widths[:1]:
        for acc in ACCUMULATORS:
            if plane % (width * acc) == 0 and plane >= 4 * width * acc:
                return width * acc, width
    return None


def _reads_planes(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, first_reduce: int) -> bool:
    """Whether the block reads one buffer whose innermost indices are its reduced iters, in
    order (a plane is contiguous), and its spatial iters before them."""
    stmt = sch.get(block)
    iters = [iv.var for iv in stmt.iter_vars]
    if len(stmt.reads) != 1:
        return False
    found = index_vars(stmt.reads[0])
    reduced = iters[first_reduce:]
    if len(found) < len(reduced) or any(v is None for v in found[-len(reduced) :]):
        return False
    return all(v.same_as(r) for v, r in zip(found[-len(reduced) :], reduced, strict=True))


def _schedule(
    sch: s_tir.Schedule, infos: list[object], index: int, chunk: int, lanes: int
) -> s_tir.Schedule:
    block = infos[index].block_rv  # type: ignore[attr-defined]
    for info in infos[:index]:
        sch.compute_inline(info.block_rv)  # type: ignore[attr-defined]
    epilogue = [info.block_rv for info in infos[index + 1 :]]  # type: ignore[attr-defined]
    kinds = infos[index].dom_kind()  # type: ignore[attr-defined]
    loops = sch.get_loops(block)
    first = kinds.index("R")
    spatial, reduce = loops[:first], loops[first:]
    fused = sch.fuse(*reduce) if len(reduce) > 1 else reduce[0]
    _, inner = sch.split(fused, factors=[None, chunk])
    partial = sch.rfactor(inner, first)
    # rfactor leaves the original loops to the combining block: each plane's partial sums
    # are computed under them, right before they are combined, the epilogue right after
    plane = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
    sch.parallel(plane)
    sch.compute_at(partial, plane, preserve_unit_loops=True)
    for consumer in epilogue:
        try:
            sch.compute_inline(consumer)
        except ScheduleError:
            sch.reverse_compute_at(consumer, plane, preserve_unit_loops=True)
    sch.set_scope(partial, 0, "local")
    # under the plane: the chunk (rfactor's new spatial iter), unit loops, the chunk count
    chunk_loop, *_, outer = sch.get_loops(partial)[len(sch.get_loops(block)) - 1 :]
    sch.reorder(outer, chunk_loop)
    acc, vec = sch.split(chunk_loop, factors=[None, lanes])
    sch.unroll(acc)
    sch.vectorize(vec)
    sch.decompose_reduction(partial, outer)
    return sch
