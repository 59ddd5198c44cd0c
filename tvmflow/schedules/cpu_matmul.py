"""CPU rule for matmul / dense / batch-matmul kernels with injective epilogues.

A register-tiled micro-kernel vectorized over the output's contiguous dim (n), the one the
second operand is contiguous in too: weights reach these kernels as [K, N] constants (ONNX
MatMul as is, Gemm's transB folded by FoldConstant), attention as [.., K, N] activations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tvm.error import InternalError
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    MAX_TILE_CHOICES,
    GemmLoops,
    TiledRule,
    dtype_bits_of_block,
    extents,
    fuse_epilogue,
    index_vars,
    is_layout_free,
    open_single_reduction,
    pick_vector,
    prepack_weight,
    schedule_spatial,
    tile_choices,
    tile_gemm,
    uses,
    vector_lanes,
    vector_registers,
)

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir


def matmul_roles(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV
) -> tuple[int | None, int, int, int | None] | None:
    """Roles in a `C[.., m, n] += A[.., m, k] * B[.., k, n]` block, else None: the iter
    positions of m and n, which read is B, and the dim of B that k indexes.

    m is None when the kernel has a single row (a GEMV with the weight as [K, N]).
    """
    import tvm

    stmt = sch.get(block)
    iters = list(stmt.iter_vars)
    reduce = [i for i, iv in enumerate(iters) if iv.iter_type == tvm.tirx.IterVar.CommReduce]
    if len(reduce) != 1 or len(stmt.reads) != 2 or len(stmt.writes) != 1:
        return None
    k = iters[reduce[0]].var
    out = [v for v in index_vars(stmt.writes[0]) if v is not None]
    if not out:
        return None
    n_var = out[-1]
    a, b = (index_vars(r) for r in stmt.reads)
    b_read = 1
    if uses(a, n_var) and not uses(b, n_var):
        a, b = b, a
        b_read = 0
    # b is contiguous along n (its last index), a does not depend on n, both on k
    if b[-1] is None or not b[-1].same_as(n_var) or uses(a, n_var):
        return None
    if not (uses(a, k) and uses(b, k)):
        return None
    m_vars = [v for v in out[:-1] if uses(a, v) and not uses(b, v)]
    position = {iv.var: i for i, iv in enumerate(iters)}
    k_dim = next((d for d, v in enumerate(b) if v is not None and v.same_as(k)), None)
    return (position[m_vars[-1]] if m_vars else None), position[n_var], b_read, k_dim


class Matmul(TiledRule):
    """Kernels with exactly one matmul-shaped reduction block and injective other blocks.

    Its tile is a tuning knob (`TiledRule`).
    """

    def _schedule(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, choice: int, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_single_reduction(func, target)
        if opened is None:
            return None
        sch, infos, index = opened
        main = infos[index]
        if main.dom_kind().count("R") != 1 or not main.dom_kind().endswith("R"):
            return None
        roles = matmul_roles(sch, main.block_rv)
        if roles is None:
            return None
        # producers (dequantize, transposes) are inlined into the operand loads
        for info in infos[:index]:
            try:
                sch.compute_inline(info.block_rv)
            except (ScheduleError, InternalError):
                return None
        loops = [it.loop_rv for it in main.iters]
        sizes = extents(sch, loops)
        if sizes is None:
            return None
        m_pos, n_pos, b_read, k_dim = roles
        lanes = vector_lanes(target, dtype_bits_of_block(sch, main.block_rv))
        epilogue = [i.block_rv for i in infos[index + 1 :]]
        weight = sch.get(main.block_rv).reads[b_read]
        # a constant weight is repacked below (at compile time: its padding costs nothing)
        free = is_layout_free(func, weight.source)
        packed = k_dim is not None and free
        pads = _pad_awkward_dims(
            sch, main.block_rv, sizes, (m_pos, n_pos, b_read), lanes, free and not packed, packed
        )
        if pads is None:
            return None
        padded, weight_pad = pads
        n_size = sizes[n_pos]
        if padded:
            epilogue = padded + epilogue
            loops = sch.get_loops(main.block_rv)[-len(sizes) :]
            sizes = extents(sch, loops)
            if sizes is None:
                return None
        m_size = 1 if m_pos is None else sizes[m_pos]
        registers = vector_registers(target)
        if m_size == 1:
            tiles = gemv_tiles(sizes[n_pos], lanes, registers)
        else:
            tiles = tile_choices(m_size, sizes[n_pos], lanes, registers)
        if choice >= len(tiles):
            return None
        tile = tiles[choice]
        gemm = GemmLoops(
            batch=tuple(loop for i, loop in enumerate(loops[:-1]) if i not in (m_pos, n_pos)),
            rows=(),
            m=None if m_pos is None else loops[m_pos],
            n=loops[n_pos],
            reduce=(loops[-1],),
        )
        weight = sch.get(main.block_rv).reads[b_read]
        if packed and k_dim is not None:
            n_dim = len(weight.region) - 1
            prepack_weight(sch, main.block_rv, b_read, [k_dim], n_dim, tile[1] * tile[2])
            if weight_pad is not None:  # the repacking reads the constant itself
                sch.compute_inline(weight_pad)
        writeback = tile_gemm(sch, main.block_rv, gemm, tile, tunable)
        # a padded tile's crop follows it, writing only the real rows and columns; under
        # a crop of padded columns an epilogue runs with a per-lane predicate, which
        # scalarizes it (CoAtNet's QK^T + bias, n = 196: 426 vs 142 us), so that epilogue
        # is its own pass over the rows (LLVM vectorizes them, with a remainder). A bare
        # crop stays in the tile (Whisper's QK^T, n = 500: 4% faster so).
        slices = sizes[n_pos] == n_size or len(epilogue) == len(padded)
        out = fuse_epilogue(sch, writeback, epilogue, lanes, slices=slices)
        if out is None:
            return None
        wb_loops = sch.get_loops(out)
        if tile[2] > 1 and sch.get(wb_loops[-1]).extent.value % tile[2] == 0:
            _, vec = sch.split(wb_loops[-1], factors=[None, tile[2]])
            sch.vectorize(vec)
        return sch


# Vectors per tile of a one-row matmul (a GEMV: decode steps, pooled heads), most preferred
# first. No loaded weight vector is reused, so only independent accumulators hide the FMA
# latency: 8 in flight cover 4 cycles x 2 FMA ports. The GEMM order (3, 2, 4, 1) left a
# 128x1000 LM head (125 vectors of 8) one accumulator: 11 us, 22 GFLOP/s.
_GEMV_NVECS = (8, 7, 6, 5, 4, 3, 2, 1)


def gemv_tiles(n: int, lanes: int, registers: int) -> list[tuple[int, int, int]]:
    """(1, vectors, lanes) tiles of a one-row output of width n: the widest that divide the
    row and fit the register file (accumulators + loaded vectors + one broadcast) first."""
    v = pick_vector(n, lanes)
    fits = [k for k in _GEMV_NVECS if (n // v) % k == 0 and 2 * k + 1 <= registers]
    return [(1, k, v) for k in fits[:MAX_TILE_CHOICES]]


def _pad_awkward_dims(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    sizes: list[int],
    roles: tuple[int | None, int, int],
    lanes: int,
    weight_is_unpacked_constant: bool,
    weight_is_packed: bool,
) -> tuple[list[s_tir.schedule.SBlockRV], s_tir.schedule.SBlockRV | None] | None:
    """Pad a matmul whose n the vector width does not divide, or whose m has no divisor from
    4 to 8, to sizes the register tile divides: the tile sizes must divide m and n exactly,
    so ViT attention over 197 tokens (a prime) ran with scalar 1x1 tiles, and its MLPs with
    one-row tiles. The activations are copied into padded buffers (scheduled here) and the
    result cropped. A constant weight that is prepacked is padded too (ddddocr's 1024x8210
    classifier ran at 7.7 GFLOP/s unpadded): its padding block is left unscheduled for the
    caller to inline into the repacking, which runs at compile time. Returns the crop
    block(s), the epilogue's new head ([] if no padding), and that weight padding block
    (None if none); None if the block cannot be padded. An unpacked constant's n is left
    alone: its padding would be a copy per call."""
    m_pos, n_pos, b_read = roles
    factors = [1] * len(sizes)
    n = sizes[n_pos]
    # a packed weight keeps a half-width vector (1000 on AVX-512: 5 x 8 lanes per GEMV tile)
    narrow = pick_vector(n, lanes) * 2 < lanes if weight_is_packed else n % lanes != 0
    if not weight_is_unpacked_constant and n > lanes and narrow:
        factors[n_pos] = lanes
    if (
        m_pos is not None
        and sizes[m_pos] >= 8
        and not any(sizes[m_pos] % r == 0 for r in range(4, 9))
    ):
        factors[m_pos] = 4
    if factors == [1] * len(sizes):
        return [], None
    weight = sch.get(block).reads[b_read].source
    before = {sch.get(b).name_hint for b in _all_blocks(sch)}
    try:
        sch.pad_einsum(block, factors)
    except (ScheduleError, InternalError):
        return None
    added = [b for b in _all_blocks(sch) if sch.get(b).name_hint not in before]
    # producers copy the operands into the padded buffers; the block after `block` crops
    crops = [
        b
        for b in added
        if any(r.source.same_as(sch.get(block).writes[0].source) for r in sch.get(b).reads)
    ]
    weight_pad = None
    for pad in added:
        reads_weight = any(r.source.same_as(weight) for r in sch.get(pad).reads)
        if weight_is_packed and reads_weight:
            weight_pad = pad
        elif pad not in crops:
            schedule_spatial(sch, pad, lanes)
    return crops, weight_pad


def _all_blocks(sch: s_tir.Schedule) -> list[s_tir.schedule.SBlockRV]:
    return list(sch.get_child_blocks(sch.get_sblock("root")))
