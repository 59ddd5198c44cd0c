"""CPU rule for injective kernels: elementwise chains, broadcasts, transposes, pads, concats.

Everything that can be inlined is inlined into its consumer; each remaining block gets its
innermost loops fused and vectorized at the target's width and its outer loops fused and
parallelized. Memory-bound work: the goal is one pass over memory with full vectors.

A concat inlined into its consumer picks its input per element through a chain of
`if_then_else(offset <= c, ...)` tests, one per input, and the chain kept the loop scalar:
DenseNet-121's concat + BN + ReLU kernels (up to 25 inputs, 14x14 maps) ran at ~1 GB/s,
a third of the model's time. Such a block's loop over the concat axis is split at the
offsets (`loop_partition`): in each piece the tests fold away and the body is a plain
vectorizable copy (2.2 ms -> 17 us on the 25-input one). Trailing loops the vector width
does not divide (14 x 14) are fused first where every access stays contiguous.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    MIN_PARALLEL_WORK,
    compute_bits_of_block,
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

from tvm.s_tir.dlight import ScheduleRule

# Phase splits up to this factor (a pixel shuffle's upscale; beyond it the unrolled phases
# stop being one vector group).
MAX_PHASES = 4
# More pieces than this: the partitioned copies would bloat the code for little gain.
MAX_PIECES = 64
# A concat's pieces run in parallel only from this many elements (a launch is ~6 us).
MIN_PIECE_PARALLEL_WORK = 64 * 1024


class Elementwise(ScheduleRule):
    """Kernels whose blocks are all spatial (no reduction)."""

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
        for info in try_inline(sch, infos):
            block = info.block_rv
            bits = compute_bits_of_block(sch, block)
            lanes = vector_lanes(target, bits)
            pieces = _split_at_selects(sch, block)
            if len(pieces) == 1:
                # a narrowing cast (fp32 math stored as bf16) keeps explicit fp32-wide vectors:
                # measured that way (PP-OCR b8's pixel shuffle 71 -> 25 ms); phases were not
                narrowing = bits != dtype_bits_of_block(sch, block)
                if narrowing or not _split_phases(sch, block):
                    fuse_contiguous_tail(sch, block, lanes)
                    schedule_spatial(sch, block, lanes)
                continue
            for piece in pieces:
                sch = _schedule_piece(sch, piece, lanes)
        return sch


def _split_at_selects(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV
) -> list[s_tir.schedule.SBlockRV]:
    """The block, or its copies over the pieces of the loop whose var its `if_then_else`
    conditions compare with constants (a concat's input offsets), when that loop splits."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    iters = [iv.var for iv in stmt.iter_vars]
    sizes = extents(sch, loops)
    if sizes is None or len(loops) != len(iters):
        return [block]
    cuts = _select_offsets(stmt)
    found = [(len(cuts.get(v, ())), -i, i) for i, v in enumerate(iters)]
    _, _, axis = max(found)
    pieces = sorted({c for c in cuts.get(iters[axis], ()) if 0 < c < sizes[axis]})
    if not pieces or len(pieces) >= MAX_PIECES:
        return [block]
    starts = [0, *pieces]
    factors: list[int | None] = [b - a for a, b in itertools.pairwise(starts)]
    try:
        parts = sch.loop_partition(loops[axis], factors=[*factors, None])
    except (ScheduleError, InternalError):
        return [block]
    return [sch.get_child_blocks(part)[0] for part in parts]


def _schedule_piece(
    sch: s_tir.Schedule, piece: s_tir.schedule.SBlockRV, lanes: int
) -> s_tir.Schedule:
    """`schedule_spatial` for one piece of a split loop, run in parallel only when large (a
    thread-pool launch per piece costs more than a small piece's copy). The pieces' loops
    over the split axis start past 0, which split and fuse refuse: a piece whose split axis
    is its innermost loop or sits among loops to fuse keeps those loops as they are (LLVM
    still vectorizes a plain copy loop). A piece that transposes a large input goes through
    register tiles (`cpu_transpose.tile_piece`)."""
    from tvmflow.schedules.cpu_transpose import tile_piece

    tiled = tile_piece(sch, piece, lanes, MIN_PIECE_PARALLEL_WORK)
    if tiled is not None:
        return tiled
    try:
        if _split_phases(sch, piece, MIN_PIECE_PARALLEL_WORK):
            return sch
        fuse_contiguous_tail(sch, piece, lanes)
        schedule_spatial(sch, piece, lanes, MIN_PIECE_PARALLEL_WORK)
    except (ScheduleError, InternalError):
        pass
    return sch


def _split_phases(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, min_parallel_work: int = MIN_PARALLEL_WORK
) -> bool:
    """A block that reads its innermost var divided by a small k (a pixel shuffle after an
    upsampling conv, a depth-to-space, a nearest upsample: `x[.., w // 2]`, channel picked by
    `w % 2`) gets that loop split into (w // k, w % k) with the phases unrolled: each source
    row is then read contiguously and LLVM writes the k phases as one interleaved vector
    group, where a vector over w gathered from k rows (UNet's up path: 0.48 -> 0.04 ms)."""
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    stmt = sch.get(block)
    if sizes is None or len(loops) < 2 or len(stmt.iter_vars) != len(loops):
        return False
    phases = _divisors_of(stmt, stmt.iter_vars[-1].var)
    if len(phases) != 1:
        return False
    (k,) = phases
    if sizes[-1] % k or sizes[-1] // k < 2:
        return False
    outer, phase = sch.split(loops[-1], factors=[None, k])
    sch.unroll(phase)
    if math.prod(sizes) >= min_parallel_work:
        rest = loops[:-1]
        sch.parallel(sch.fuse(*rest) if len(rest) > 1 else rest[0])
    del outer
    return True


def _divisors_of(stmt: Any, var: Any) -> set[int]:
    """The constants k (2..MAX_PHASES) by which the block's reads floor-divide or take the
    remainder of an expression of `var`."""
    import tvm_ffi
    from tvm import tirx
    from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr

    found: set[int] = set()

    def visit(node: Any) -> None:
        if not isinstance(node.b, tirx.IntImm) or not 2 <= int(node.b.value) <= MAX_PHASES:
            return
        if any(v.same_as(var) for v in collect_vars_used_in_prim_expr(node.a)):
            found.add(int(node.b.value))

    for region in stmt.reads:
        for r in region.region:
            tvm_ffi.structural_walk(
                r.min, [(tirx.FloorDiv, visit), (tirx.FloorMod, visit)], order="pre"
            )
    return found


def _select_offsets(stmt: Any) -> dict[Any, set[int]]:
    """Per block var, the constants `if_then_else` conditions of the form `c <= v` or
    `v < c` compare it with."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    select = tvm.ir.Op.get("prim.if_then_else")
    found: dict[Any, set[int]] = {}

    def visit(call: Any) -> None:
        if not call.op.same_as(select):
            return
        cond = call.args[0]
        if isinstance(cond, tirx.LE) and isinstance(cond.a, tirx.IntImm):
            var, value = cond.b, cond.a
        elif isinstance(cond, tirx.LT) and isinstance(cond.b, tirx.IntImm):
            var, value = cond.a, cond.b
        else:
            return
        if isinstance(var, tirx.Var):
            found.setdefault(var, set()).add(int(value.value))

    tvm_ffi.structural_walk(stmt.body, [(tvm.ir.Call, visit)], order="pre")
    return found


def fuse_contiguous_tail(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """Fuse the block's trailing loops when the innermost one is not a whole number of
    vectors and every access reads those dims as one contiguous run (a 14 x 14 map: 196
    elements to vectorize instead of 14); a transposed or shifted access keeps them apart."""
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    if sizes is None or len(loops) < 2 or sizes[-1] % lanes == 0:
        return
    stmt = sch.get(block)
    iters = [iv.var for iv in stmt.iter_vars]
    if len(iters) != len(loops):
        return
    tail = contiguous_run(stmt, iters, sizes)
    if tail > 1:
        sch.fuse(*loops[-tail:])


def contiguous_run(stmt: Any, iters: list[Any], sizes: list[int]) -> int:
    """How many of `iters` (block vars of extents `sizes`), counted from the last, every
    access of the block reads as one contiguous run (at least 1)."""
    tail = 1
    while tail < len(iters) and _contiguous(stmt, iters[-tail - 1 :], sizes[-tail - 1 :]):
        tail += 1
    return tail


def _contiguous(stmt: Any, tail: list[Any], sizes: list[int]) -> bool:
    """Whether every buffer the block touches either ignores the `tail` vars or indexes its
    last dims with exactly them, in order, over the whole of each dim."""
    from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr

    def mentions(expr: Any) -> bool:
        return any(v.same_as(t) for v in collect_vars_used_in_prim_expr(expr) for t in tail)

    for region in [*stmt.reads, *stmt.writes]:
        found = index_vars(region)
        if not any(mentions(r.min) for r in region.region):
            continue
        shape = [int(s) if hasattr(s, "value") else None for s in region.source.shape]
        n = len(tail)
        if len(found) < n or any(
            v is None or not v.same_as(t) for v, t in zip(found[-n:], tail, strict=True)
        ):
            return False
        if shape[-n:] != sizes or any(mentions(r.min) for r in region.region[:-n]):
            return False
        if any(not _is_one(r.extent) for r in region.region[-n:]):
            return False
    return True


def _is_one(expr: Any) -> bool:
    return hasattr(expr, "value") and int(expr.value) == 1
