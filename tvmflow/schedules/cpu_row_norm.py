"""CPU rule for row normalizations: softmax, layer norm, RMS norm (reductions over the last
axis, each row normalized by its own max / sum / mean and variance).

TVM's `dlight.cpu.Reduction` runs each row's reductions as one serial chain (every add waits
for the previous one: a float sum cannot be reordered) and vectorizes rows the vector width
does not divide through a predicate, which scalarizes them. Measured on ViT's 197-token
softmax and layer norm, those two kernels were 22% of deit_tiny's kernel time. Here every
reduction is split into `lanes` partial results (rfactor) that one vector updates per step,
and the blocks are merged under one loop over rows: the row stays in cache from its max to
its normalization, and the intermediates shrink to one row each. Measured on one thread:
a 197-token softmax 300 -> 55 us, a 197x192 layer norm 75 -> 6 us.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    dtype_bits_of_block,
    extents,
    index_vars,
    open_reduction_epilogue,
    vector_lanes,
)

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir


class RowNorm(ScheduleRule):
    """Kernels of reduction and injective blocks over the same rows (leading spatial dims),
    every reduction over the last axis only, the last block injective."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_reduction_epilogue(func, target)
        if opened is None:
            return None
        sch, infos = opened
        rows = _row_dims(sch, infos)
        if rows is None:
            return None
        lanes = vector_lanes(target, dtype_bits_of_block(sch, infos[-1].block_rv))
        try:
            return _schedule(sch, infos, rows, lanes)
        except (ScheduleError, InternalError):
            return None


def _row_dims(sch: s_tir.Schedule, infos: list[Any]) -> int | None:
    """How many leading dims are rows: every block iterates them first, with the same
    extents, and indexes every buffer it writes with them as its leading dims (so merging
    the blocks' row loops keeps each row's producers before its consumers). Reductions
    reduce their last iter only. 0 when every reduction makes one value (GroupNorm's mean
    and variance of a whole [1, 1, C*H*W] tensor). None when the kernel is not shaped so."""
    kinds = [info.dom_kind() for info in infos]
    if any(k.count("R") > 1 or ("R" in k and not k.endswith("R")) for k in kinds):
        return None
    reductions = [info.block_rv for info in infos if not info.is_injective()]
    # one reduction of a whole tensor is FullReduction's (more accumulators)
    if len(reductions) > 1 and all(_one_row(sch, block) for block in reductions):
        return 0  # nothing to merge: each block keeps its own loops
    rows = min(len(k) - len(k.lstrip("S")) for k in kinds)
    reduced = [k for k in kinds if "R" in k]
    rows = min(rows, *(len(k) - 1 for k in reduced))
    if rows < 1:
        return None
    written = {w.source for info in infos for w in sch.get(info.block_rv).writes}
    first: list[int] | None = None
    for info in infos:
        stmt = sch.get(info.block_rv)
        sizes = extents(sch, sch.get_loops(info.block_rv)[:rows])
        if sizes is None or (first is not None and sizes != first):
            return None
        first = sizes
        heads = [iv.var for iv in stmt.iter_vars[:rows]]
        # what it writes, and reads of what the kernel writes, stay within the block's row
        accesses = [*stmt.writes, *(r for r in stmt.reads if r.source in written)]
        if not all(_row_led(access, heads) for access in accesses):
            return None
    return rows


def _one_row(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether a reduction block reduces everything into a single value."""
    import tvm

    spatial = [
        iv.dom.extent
        for iv in sch.get(block).iter_vars
        if iv.iter_type != tvm.tirx.IterVar.CommReduce
    ]
    return all(isinstance(e, tvm.tirx.IntImm) and e.value == 1 for e in spatial)


def _row_led(access: Any, heads: list[Any]) -> bool:
    """Whether a buffer access is indexed by the row vars first, in order (unit dims, a
    constant index, aside)."""
    import tvm

    index = [
        v
        for v, r in zip(index_vars(access), access.region, strict=True)
        if not isinstance(r.min, tvm.tirx.IntImm)
    ]
    return len(index) >= len(heads) and all(
        i is not None and i.same_as(v) for i, v in zip(index, heads, strict=False)
    )


def _schedule(sch: s_tir.Schedule, infos: list[Any], rows: int, lanes: int) -> s_tir.Schedule:
    """Inline single-use intermediates, vectorize the reductions (rfactor) and the injective
    row loops, then merge every block's row loops into one.

    The row loop stays serial: merge drops a loop's parallel kind, and parallelizing after
    the merge is refused (the decomposed inits) or, without them, measured 3-5x slower than
    serial even on one thread (a 128x128 softmax: 100 vs 18 us; the row's scratch becomes
    a per-task allocation). A row is microseconds of work, so many threads would only pay
    for large batches; that is left to a tuned schedule.
    """
    for info in infos[:-1]:
        if info.is_injective() and len(sch.get_consumers(info.block_rv)) == 1:
            with contextlib.suppress(ScheduleError):
                sch.compute_inline(info.block_rv)
    tails = []  # loops over a row's vectors whose last vector is partial
    heads = []  # each block's (fused) row loop: merged into one at the end
    for block in _blocks(sch):
        loops = sch.get_loops(block)
        size = extents(sch, loops[-1:])
        partial = None
        if len(loops) > rows and size is not None and size[0] >= 2 * lanes:
            step, lane = sch.split(loops[-1], factors=[None, lanes])
            if _reduces(sch, block):
                # each step updates `lanes` partial results with one vector
                partial = sch.rfactor(lane, rows)
                sch.set_scope(partial, 0, "local")
                step, lane = sch.get_loops(partial)[-2:]
            tails += _vectorize_row(sch, step, lane)
        for nest in ([partial, block] if partial is not None else [block]) if rows else []:
            loops = sch.get_loops(nest)
            heads.append(sch.fuse(*loops[:rows]) if rows > 1 else loops[0])
        if partial is not None:
            # the init leaves the loop over steps, which may be partitioned below (each
            # part would run it again: TVM lowers a partitioned init by the part's first
            # step). Per block: vectorize refuses loops over what it leaves, and after
            # the merge a second decompose finds its block no longer a reduction.
            sch.decompose_reduction(partial, sch.get_loops(partial)[-2])
    if len(heads) > 1:
        sch.merge(*heads)
    for step in tails:
        steps = extents(sch, [step])
        if steps is not None:
            sch.loop_partition(step, factors=[steps[0] - 1, None])
    return sch


def _vectorize_row(
    sch: s_tir.Schedule, outer: s_tir.schedule.LoopRV, inner: s_tir.schedule.LoopRV
) -> list[s_tir.schedule.LoopRV]:
    """Vectorize `inner` (one vector of a row). Where the row has a remainder, returns
    `outer` to be partitioned into the full vectors and the last, partial one: a predicate
    inside a vectorized loop scalarizes all of it, so only the last one keeps it."""
    steps = (extents(sch, [outer]) or [0])[0]
    predicated = _has_predicate(sch, inner)
    if predicated and steps < 2:
        return []
    sch.vectorize(inner)
    return [outer] if predicated else []


def _has_predicate(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> bool:
    """Whether the block right under `loop` runs under a predicate (a split's remainder)."""
    import tvm

    realize = sch.get(loop).body
    predicate = getattr(realize, "predicate", None)
    return not (isinstance(predicate, tvm.tirx.IntImm) and predicate.value == 1)


def _blocks(sch: s_tir.Schedule) -> list[s_tir.schedule.SBlockRV]:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _reduces(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    import tvm

    return any(iv.iter_type == tvm.tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)
