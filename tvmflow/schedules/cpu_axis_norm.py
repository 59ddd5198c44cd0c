"""CPU rule for normalizations over an axis that is not the innermost one: softmax over the
16 bins of YOLOv8's DFL head ((1, 16, 4, N) along axis 1), softmax or layer norm over the
channels of an NCHW map.

`RowNorm` needs the reduced axis to be the contiguous one; these kernels fell to TVM's
`dlight.cpu.Reduction`, which walks the reduced axis innermost, with a stride of the whole
plane between elements and no vectors: YOLOv8n's DFL softmax over 16 x 4 x 2100 values took
2.2 ms (OpenVINO: 0.06 ms). Here the contiguous axis is cut into vectors and each vector of
columns is normalized on its own: the reduction steps along the reduced axis, one vector
per step (a vector of independent maxima / sums, so no reduction across lanes), and every
block's loops are merged under one loop over those vectors, so a column block's values stay
in cache from its max to its normalization.
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


class AxisNorm(ScheduleRule):
    """Kernels of reductions over one non-innermost axis `a` of a rank-r tensor and
    injective blocks: every full-rank block indexes its output by its iters in order, every
    reduction reads a rank-r tensor with its reduce iter at `a` and its other iters in order,
    and the last block is a full-rank injective one (the normalized output)."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_reduction_epilogue(func, target)
        if opened is None:
            return None
        sch, infos = opened
        lanes = vector_lanes(target, dtype_bits_of_block(sch, infos[-1].block_rv))
        try:
            _inline_intermediates(sch, infos)
            shape = _axis_shape(sch)
            if shape is None or shape[1][-1] < 2 * lanes:
                return None
            return _schedule(sch, *shape, lanes)
        except (ScheduleError, InternalError):
            return None


def _inline_intermediates(sch: s_tir.Schedule, infos: list[Any]) -> None:
    """Inline injective blocks with one consumer (a softmax's `x - max` into its exp)."""
    for info in infos[:-1]:
        if info.is_injective() and len(sch.get_consumers(info.block_rv)) == 1:
            with contextlib.suppress(ScheduleError):
                sch.compute_inline(info.block_rv)


def _axis_shape(sch: s_tir.Schedule) -> tuple[int, list[int]] | None:
    """(the reduced axis, the full-rank extents) if every block fits the rule's shape: the
    last block's iters are the tensor's dims; each reduction reduces one iter, its last,
    over one dim (the same in all) of a full-rank read; every block writes, and reads what
    the kernel computes, at its own position only (the full index or the row's reduced
    one), so blocks can share the loops over rows and columns."""
    blocks = _blocks(sch)
    sizes = extents(sch, sch.get_loops(blocks[-1]))
    rank = len(sch.get(blocks[-1]).iter_vars)
    if sizes is None or rank < 2 or len(sizes) != rank:
        return None
    axes = {_reduced_axis(sch, b, rank) for b in blocks if _reduces(sch, b)}
    if len(axes) != 1:
        return None
    (axis,) = axes
    if axis is None or axis == rank - 1:
        return None
    written = {w.source for b in blocks for w in sch.get(b).writes}
    for block in blocks:
        stmt = sch.get(block)
        iters = [iv.var for iv in stmt.iter_vars]
        full = iters[:axis] + iters[-1:] + iters[axis:-1] if _reduces(sch, block) else iters
        row = full[:axis] + full[axis + 1 :]
        if len(full) != rank or len(stmt.writes) != 1:
            return None
        own = row if _reduces(sch, block) else full
        if not _same(_vars(stmt.writes[0]), own):
            return None
        for read in stmt.reads:
            if read.source in written and not (_same(_vars(read), full) or _same(_vars(read), row)):
                return None
    return axis, sizes


def _reduced_axis(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, rank: int) -> int | None:
    """The dim a reduction with one reduce iter (its last) reduces in its full-rank reads,
    None if it has none or several."""
    import tvm

    stmt = sch.get(block)
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    if kinds.count(tvm.tirx.IterVar.CommReduce) != 1 or kinds[-1] != tvm.tirx.IterVar.CommReduce:
        return None
    k = stmt.iter_vars[-1].var
    found = {
        d
        for read in stmt.reads
        if len(index := _vars(read)) == rank
        for d, v in enumerate(index)
        if v is not None and v.same_as(k)
    }
    return found.pop() if len(found) == 1 else None


def _same(index: list[Any], iters: list[Any]) -> bool:
    return len(index) == len(iters) and all(
        v is not None and v.same_as(i) for v, i in zip(index, iters, strict=True)
    )


def _schedule(sch: s_tir.Schedule, axis: int, sizes: list[int], lanes: int) -> s_tir.Schedule:
    """Per block: loops (other dims, column vectors, [axis], lanes), the lanes vectorized;
    the loops over the other dims merged across blocks. Where the vector width does not
    divide the columns, each block's loop over column vectors is partitioned so only the
    last, partial vector keeps a predicate (a predicate scalarizes a whole vectorized loop)."""
    heads = []
    steps = []
    for block in _blocks(sch):
        loops = sch.get_loops(block)
        if _reduces(sch, block):
            # iters: the other dims in order, then the reduced one
            other, reduce = list(loops[:-1]), loops[-1]
            rows, column = other[:-1], other[-1]
        else:
            rows = [loop for d, loop in enumerate(loops[:-1]) if d != axis]
            reduce, column = loops[axis], loops[-1]
        step, lane = sch.split(column, factors=[None, lanes])
        sch.reorder(*rows, step, reduce, lane)
        sch.vectorize(lane)
        heads.append(sch.fuse(*rows) if len(rows) > 1 else rows[0] if rows else None)
        steps.append(step)
    if all(head is not None for head in heads):
        sch.merge(*heads)
    count = -(-sizes[-1] // lanes)
    if sizes[-1] % lanes == 0:
        sch.merge(*steps)
    else:
        for step in steps:
            sch.loop_partition(step, factors=[count - 1, None])
    # the init of each reduction (partitioned: of each copy) goes before its reduced loop
    for block in _all_blocks(sch):
        if _reduces(sch, block):
            sch.decompose_reduction(block, sch.get_loops(block)[-2])
    return sch


def _vars(access: Any) -> list[Any]:
    """`index_vars` of an access without its constant-index dims (the unit dims
    normalization leaves indexed by 0)."""
    import tvm

    return [
        v
        for v, r in zip(index_vars(access), access.region, strict=True)
        if not isinstance(r.min, tvm.tirx.IntImm)
    ]


def _all_blocks(sch: s_tir.Schedule) -> list[s_tir.schedule.SBlockRV]:
    """Every block with a name, partition copies included (`_blocks` lists the root's)."""
    import tvm_ffi
    from tvm import s_tir

    names: list[str] = []

    def visit(block: s_tir.stmt.SBlock) -> None:
        if block.iter_vars:  # not the root, nor a partition's opaque wrappers
            names.append(block.name_hint)

    tvm_ffi.structural_walk(sch.mod["main"].body, [(s_tir.stmt.SBlock, visit)])
    return [sch.get_sblock(name) for name in names]


def _blocks(sch: s_tir.Schedule) -> list[s_tir.schedule.SBlockRV]:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _reduces(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    import tvm

    return any(iv.iter_type == tvm.tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)
