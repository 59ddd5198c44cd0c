"""CPU rule for injective kernels that transpose: an input read along a different dim than
the one the output is contiguous in (attention's head split and key transpose, channel-last
to channel-first around convs, with whatever elementwise ops fused onto them).

The Elementwise rule runs the output's contiguous dim innermost, so such an input is read
with a stride of a whole row per element, one cache line per element: wav2vec2's
[3199, 512] -> [512, 3199] transpose + GELU took 14 ms, 13% of the model. Here a vector of
the input's contiguous dim runs innermost instead (one full cache line per load); the
stores go to `lanes` output rows, each written sequentially as the next loop advances.
Measured on that kernel: 9 -> 1.1 ms.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    MIN_PARALLEL_WORK,
    dtype_bits_of_block,
    extents,
    index_vars,
    open_schedule,
    schedule_spatial,
    vector_lanes,
)

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

# Below this many bytes a transposed input stays in L2 while the Elementwise schedule reads
# it: measured no gain there (a [3, 197, 64] key transpose, 150 KB: 8.7 vs 9.4 us), while a
# 1.2 MB NHWC -> NCHW transpose gained 1.25x and a 6.5 MB one 6x.
MIN_TRANSPOSE_BYTES = 256 * 1024


class Transpose(ScheduleRule):
    """Kernels of injective blocks where, after inlining, some block reads an input whose
    contiguous (last) dim is indexed by another loop than the innermost one."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        from tvm.s_tir.dlight.base import try_inline

        opened = open_schedule(func, target)
        if opened is None:
            return None
        sch, infos = opened
        if not all(info.is_injective() for info in infos):
            return None
        try:
            blocks = [info.block_rv for info in try_inline(sch, infos)]
            found = False
            for block in blocks:
                lanes = vector_lanes(target, dtype_bits_of_block(sch, block))
                transposed = _transposed_loop(sch, block, lanes)
                if transposed is None:
                    schedule_spatial(sch, block, lanes)
                    continue
                loop, read = transposed
                tiled = _tiled(sch.copy(), block, loop, read, lanes)
                if tiled is not None:
                    sch = tiled
                else:
                    _schedule_transposed(sch, block, loop, lanes)
                found = True
        except (ScheduleError, InternalError):
            return None
        return sch if found else None


def _transposed_loop(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int
) -> tuple[s_tir.schedule.LoopRV, int] | None:
    """The loop that indexes the contiguous dim of the block's largest transposed read (not
    the innermost loop, bound to a bare block var, its extent a multiple of `lanes`), and
    that read's index. None when the block reads nothing transposed (or the vector width
    would not fit)."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    if sizes is None or len(loops) < 2 or len(stmt.iter_vars) != len(loops):
        return None
    if not _plain_bindings(sch, loops):
        return None
    position = {iv.var: i for i, iv in enumerate(stmt.iter_vars)}
    best: tuple[int, int, int] | None = None  # (elements read, loop position, read index)
    for index, read in enumerate(stmt.reads):
        last = index_vars(read)[-1] if read.region else None
        at = position.get(last) if last is not None else None
        if at is None or at == len(loops) - 1:
            continue
        if sizes[at] % lanes or sizes[at] < lanes or sizes[-1] < 2:
            continue
        elements = math.prod(int(d) for d in read.source.shape)
        if elements * read.source.dtype.bits // 8 < MIN_TRANSPOSE_BYTES:
            continue
        if best is None or elements > best[0]:
            best = (elements, at, index)
    return None if best is None else (loops[best[1]], best[2])


def _plain_bindings(sch: s_tir.Schedule, loops: list[s_tir.schedule.LoopRV]) -> bool:
    """Whether the block under `loops` binds its i-th var to exactly the i-th loop's var
    (no fused or split index): a read's index then names a loop."""
    realize = sch.get(loops[-1]).body
    values = list(getattr(realize, "iter_values", []))
    return len(values) == len(loops) and all(
        v.same_as(sch.get(lp).loop_var) for v, lp in zip(values, loops, strict=True)
    )


def _tiled(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    loop: s_tir.schedule.LoopRV,
    read: int,
    lanes: int,
) -> s_tir.Schedule | None:
    """`lanes` x `lanes` tiles through a register-sized local buffer: each tile's input rows
    are copied in with vector loads, then its output rows written with vector stores (the
    tile read across, in L1). None where the output's contiguous dim is not whole vectors
    or the tile would not be one vector per row.

    `_schedule_transposed` writes `lanes` output rows a scalar at a time; when those rows
    are a power of two apart (16 KiB for a [4096, 128] -> [128, 64, 64] transpose) they fall
    in one L1 set and evict each other at every store: SegFormer's such transposes ran at
    1.3 GB/s (1.6 ms), tiled 0.28 ms."""
    import tvm

    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    at = next(i for i, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(loop)))
    if sizes is None or sizes[-1] % lanes or at == len(loops) - 1:
        return None
    if tvm.get_global_func("s_tir.schedule.HasIfThenElse")(sch.get(block)):
        return None  # a guarded read (a concat's piece): the tile would copy unguarded
    try:
        outer, across = sch.split(loop, factors=[None, lanes])
        row_tiles, row = sch.split(loops[-1], factors=[None, lanes])
        rest = [lp for i, lp in enumerate(loops[:-1]) if i != at]
        order = [*rest[:at], outer, *rest[at:], row_tiles, across, row]
        sch.reorder(*order)
        tile = sch.cache_read(block, read, "local")
        sch.compute_at(tile, row_tiles)
        copy = sch.get_loops(tile)[len(order) - 2 :]
        copy_sizes = extents(sch, copy)
        if copy_sizes is None or math.prod(copy_sizes) > lanes * lanes or copy_sizes[-1] != lanes:
            return None
        sch.vectorize(copy[-1])
        sch.vectorize(row)
        heads = order[: at + 1]
        if math.prod(sizes) >= MIN_PARALLEL_WORK:
            sch.parallel(sch.fuse(*heads) if len(heads) > 1 else heads[0])
    except (ScheduleError, InternalError):
        return None
    return sch


def _schedule_transposed(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, loop: s_tir.schedule.LoopRV, lanes: int
) -> None:
    """Move one vector of `loop` innermost and vectorize it; parallelize the loops above
    the innermost one that came before `loop` (the vector's row tiles)."""
    loops = sch.get_loops(block)
    at = next(i for i, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(loop)))
    sizes = extents(sch, loops) or []
    outer, vec = sch.split(loop, factors=[None, lanes])
    rest = [lp for i, lp in enumerate(loops) if i != at]
    order = [*rest[:at], outer, *rest[at:], vec]
    sch.reorder(*order)
    sch.vectorize(vec)
    heads = order[: at + 1]
    if math.prod(sizes) >= MIN_PARALLEL_WORK:
        sch.parallel(sch.fuse(*heads) if len(heads) > 1 else heads[0])


# A concat piece's tile: the transposed dim whole by one vector of output columns.
MAX_PIECE_TILE_BYTES = 32 * 1024


def tile_piece(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int, min_parallel_work: int
) -> s_tir.Schedule | None:
    """For one piece of a split concat (`cpu_elementwise`) that copies a large input read
    across its contiguous dim: the piece run as tiles of the transposed dim's whole extent
    by one vector of output columns, the input's rows copied into a local tile with vector
    loads. A schedule (a copy of `sch`), or None where the piece is no such transpose.

    The piece's loop over the concat axis starts past 0, which split refuses, so it stays
    whole inside the tile. SegFormer's decoder concat of a transposed [4096, 256] token
    map with three feature maps: 7.8 -> 1.4 ms."""
    import tvm
    from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr

    stmt = sch.get(block)
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    if sizes is None or len(loops) < 2 or len(loops) != len(stmt.iter_vars):
        return None
    if sizes[-1] % lanes or int(sch.get(loops[-1]).min) != 0:
        return None
    values = list(getattr(sch.get(loops[-1]).body, "iter_values", []))
    for value, loop in zip(values, loops, strict=False):
        used = list(collect_vars_used_in_prim_expr(value))
        if len(used) != 1 or not used[0].same_as(sch.get(loop).loop_var):
            return None
    position = {iv.var: i for i, iv in enumerate(stmt.iter_vars)}
    analyzer = tvm.sym.Analyzer()
    for iv in stmt.iter_vars:
        analyzer.bind(iv.var, iv.dom)
    best: tuple[int, int, int] | None = None  # (elements, loop position, read index)
    for index, read in enumerate(stmt.reads):
        used = list(collect_vars_used_in_prim_expr(read.region[-1].min)) if read.region else []
        at = position.get(used[0]) if len(used) == 1 else None
        if at is None or at == len(loops) - 1:
            continue
        bytes_per = read.source.dtype.bits // 8
        elements = math.prod(int(d) for d in read.source.shape)
        if elements * bytes_per < MIN_TRANSPOSE_BYTES:
            continue
        if sizes[at] * lanes * bytes_per > MAX_PIECE_TILE_BYTES:
            continue
        if not _in_bounds(analyzer, read):
            continue  # another piece's input: this piece never reads it
        if best is None or elements > best[0]:
            best = (elements, at, index)
    if best is None:
        return None
    _, at, read_index = best
    work = sch.copy()
    try:
        loops = work.get_loops(block)
        row_tiles, row = work.split(loops[-1], factors=[None, lanes])
        heads = [lp for i, lp in enumerate(loops[:-1]) if i != at]
        work.reorder(*heads, row_tiles, loops[at], row)
        tile = work.cache_read(block, read_index, "local")
        work.compute_at(tile, row_tiles)
        copy = work.get_loops(tile)[len(heads) + 1 :]
        copy_sizes = extents(work, copy)
        if copy_sizes is None or math.prod(copy_sizes) > sizes[at] * lanes:
            return None
        if copy_sizes[-1] % lanes == 0:
            work.vectorize(work.split(copy[-1], factors=[None, lanes])[1])
        work.vectorize(row)
        if math.prod(sizes) >= min_parallel_work:
            outer = [*heads, row_tiles]
            # serial where the concat axis is among them (it starts past 0: fuse refuses)
            with contextlib.suppress(ScheduleError, InternalError):
                work.parallel(work.fuse(*outer) if len(outer) > 1 else outer[0])
    except (ScheduleError, InternalError):
        return None
    return work


def _in_bounds(analyzer: Any, read: Any) -> bool:
    """Whether every index of `read` stays inside its buffer over the block vars' domains
    (bound in `analyzer`)."""
    for r, extent in zip(read.region, read.source.shape, strict=True):
        bound = analyzer.const_int_bound(r.min)
        if bound.min_value < 0 or bound.max_value + int(r.extent) > int(extent):
            return False
    return True
