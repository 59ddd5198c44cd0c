"""Helpers the CPU schedule rules share: target facts and loop-nest building blocks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tvm.s_tir.dlight import ScheduleRule

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

# LLVM CPU names whose widest vectors are 512 bits (x86-64-v4 and the AVX-512 server cores).
AVX512_CPUS = frozenset(
    {
        "x86-64-v4",
        "skylake-avx512",
        "cascadelake",
        "cooperlake",
        "icelake-server",
        "sapphirerapids",
        "emeraldrapids",
        "graniterapids",
        "znver4",
        "znver5",
    }
)
# Parallelizing a loop nest costs a thread-pool wake-up; below this many elements it does not pay.
MIN_PARALLEL_WORK = 4096
# Fewer outer iterations than this: split the innermost loop to make parallel chunks.
MIN_PARALLEL_TASKS = 16


def is_cpu(target: tvm.target.Target) -> bool:
    return str(target.kind.name) == "llvm"


def open_schedule(
    func: tvm.tirx.PrimFunc, target: tvm.target.Target
) -> tuple[s_tir.Schedule, list[Any]] | None:
    """Every CPU rule's first step: a schedule of `func` and its normalized blocks, or None
    when the rule cannot apply (not a CPU target, or a kernel DLight cannot normalize)."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    if not isinstance(func, tvm.tirx.PrimFunc) or not is_cpu(target) or hides_writes(func):
        return None
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if not infos or any(_degenerate_reduction(sch, info) for info in infos):
        return None
    return sch, infos


def open_reduction_epilogue(
    func: tvm.tirx.PrimFunc, target: tvm.target.Target
) -> tuple[s_tir.Schedule, list[Any]] | None:
    """`open_schedule` for rules over reductions followed by elementwise work (softmax, norms,
    GRN): None unless there are several blocks, one of them a reduction, the last injective."""
    opened = open_schedule(func, target)
    if opened is None:
        return None
    _, infos = opened
    if len(infos) < 2 or not infos[-1].is_injective():
        return None
    if all(info.is_injective() for info in infos):
        return None
    return opened


def _degenerate_reduction(sch: s_tir.Schedule, info: Any) -> bool:
    """A reduction block (it has an init) whose reduce iterators all have extent 1: a 1x1
    depthwise conv (FastViT/MobileOne's scale branch). Normalized it looks injective, and
    inlining or scheduling it as injective computed wrong values (the kernel check caught it),
    so no rule claims it and it keeps the reference schedule."""
    return info.is_injective() and sch.get(info.block_rv).init is not None


def hides_writes(func: tvm.tirx.PrimFunc) -> bool:
    """Whether a block writes without declaring it (TOPI's hand-written loops: sort, NMS,
    scatter, cumsum). s_tir's dependence analysis cannot see such writes, so inlining a
    producer into its consumers is unsound there: NMS's kernel overwrites the sorted scores
    it gathered, and inlining the gather made the overwritten buffer undefined."""
    import tvm_ffi
    from tvm import s_tir

    blocks: list[Any] = []
    tvm_ffi.structural_walk(func.body, [(s_tir.stmt.SBlock, blocks.append)], order="pre")
    return any(not block.writes for block in blocks[1:])


def single_reduction(infos: Sequence[Any]) -> int | None:
    """Index of the one reduction block among injective ones (GEMM/conv kernels), else None."""
    reductions = [i for i, info in enumerate(infos) if not info.is_injective()]
    return reductions[0] if len(reductions) == 1 else None


def open_single_reduction(
    func: tvm.tirx.PrimFunc, target: tvm.target.Target
) -> tuple[s_tir.Schedule, list[Any], int] | None:
    """`open_schedule` for GEMM-like rules: also the index of the kernel's one reduction
    block, or None when it has none or several."""
    opened = open_schedule(func, target)
    if opened is None:
        return None
    sch, infos = opened
    index = single_reduction(infos)
    return None if index is None else (sch, infos, index)


def vector_bits(target: tvm.target.Target) -> int:
    """Widest SIMD register of the target CPU: 512 (AVX-512), 256 (AVX2), 128 (SSE, NEON).

    Decided from the target's mcpu/mattr, not the build machine: LLVM's own query reports
    the host's width for generic x86 CPU names.
    """
    mcpu = str(target.attrs.get("mcpu", ""))
    mattr = [str(a) for a in target.attrs.get("mattr", [])]
    if _is_arm(target):
        return 128
    if mcpu in AVX512_CPUS or "+avx512f" in mattr:
        return 512
    if mcpu.startswith("x86-64-v3") or "+avx2" in mattr or mcpu in ("haswell", "znver2", "znver3"):
        return 256
    return 128


def vector_lanes(target: tvm.target.Target, dtype_bits: int = 32) -> int:
    return max(1, vector_bits(target) // dtype_bits)


def extents(sch: s_tir.Schedule, loops: Sequence[s_tir.schedule.LoopRV]) -> list[int] | None:
    """Static loop extents, or None when any is symbolic."""
    import tvm

    out = []
    for loop in loops:
        ext = sch.get(loop).extent
        if not isinstance(ext, tvm.tirx.IntImm):
            return None
        out.append(int(ext.value))
    return out


def schedule_spatial(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    lanes: int,
    min_parallel_work: int = MIN_PARALLEL_WORK,
) -> None:
    """Parallelize the outer loops of a spatial block (of at least `min_parallel_work`
    elements) and vectorize its innermost loop.

    Loops are not fused across dims for vectorization: a fused index reaches the buffers
    through div/mod, which for pads and transposes turns every vector into a gather
    (measured 20x slower than a plain row loop). An innermost loop the vector width does
    not divide stays scalar; LLVM's loop vectorizer handles it with a remainder loop.
    """
    loops = sch.get_loops(block)
    sizes = extents(sch, loops)
    if not loops or sizes is None:
        return
    inner, outer = loops[-1], list(loops[:-1])
    if math.prod(sizes[:-1]) < MIN_PARALLEL_TASKS and sizes[-1] >= lanes * MIN_PARALLEL_TASKS:
        # one long row: split it so there are chunks to share out
        chunk, inner = sch.split(inner, factors=[None, lanes * 16])
        outer.append(chunk)
    if sch.get(inner).extent.value % lanes == 0 and lanes > 1:
        _, vec = sch.split(inner, factors=[None, lanes])
        sch.vectorize(vec)
    if outer and math.prod(sizes) >= min_parallel_work:
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def index_vars(region: Any) -> list[Any]:
    """The iter var each dim of a buffer access is indexed by (None where not a bare var)."""
    import tvm

    return [r.min if isinstance(r.min, tvm.tirx.Var) else None for r in region.region]


def uses(index: Any, var: Any) -> bool:
    """Whether an access uses `var` in any dim: `index` is a TensorRegion or `index_vars` list."""
    from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr

    if isinstance(index, list):
        return any(x is not None and x.same_as(var) for x in index)
    return any(v.same_as(var) for r in index.region for v in collect_vars_used_in_prim_expr(r.min))


def dtype_bits_of_block(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int:
    stmt = sch.get(block)
    return int(stmt.writes[0].source.dtype.bits) if stmt.writes else 32


def compute_bits_of_block(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int:
    """The float width a block computes in: its output's, or for a narrow float output
    read from wider floats (an fp32 -> bf16 cast epilogue, which TIR's BF16 legalization
    computes in fp32) the widest float read. Vectors of that many lanes fill a register;
    at the output's width (32 bf16 lanes) a 240-wide row had no whole vector and stayed
    scalar (PP-OCR's pixel shuffle + bf16 cast at batch 8: 71 vs 21 ms in fp32)."""
    out = dtype_bits_of_block(sch, block)
    stmt = sch.get(block)
    if out >= 32 or not stmt.writes or not _is_float(stmt.writes[0].source.dtype):
        return out
    reads = [int(r.source.dtype.bits) for r in stmt.reads if _is_float(r.source.dtype)]
    return max([out, *reads])


def _is_float(dtype: Any) -> bool:
    return str(dtype).startswith(("float", "bfloat"))


def vector_registers(target: tvm.target.Target) -> int:
    """SIMD registers of the target: 32 with AVX-512 and on AArch64, 16 with AVX2/SSE."""
    return 32 if vector_bits(target) == 512 or _is_arm(target) else 16


def _is_arm(target: tvm.target.Target) -> bool:
    triple = str(target.attrs.get("mtriple", ""))
    mcpu = str(target.attrs.get("mcpu", ""))
    return triple.startswith(("aarch64", "arm")) or mcpu.startswith(("cortex", "neoverse", "apple"))


def pick_vector(n: int, lanes: int) -> int:
    """Widest power-of-two vector length up to `lanes` that divides n (1: stay scalar)."""
    v = lanes
    while v > 1 and n % v:
        v //= 2
    return v


# Vectors per tile row, most preferred first (measured on AVX-512: 8x3 > 8x2 > 4x4 > 8x1).
_NVEC_PREFERENCE = (3, 2, 4, 1)


def pick_tile(
    m: int,
    n: int,
    lanes: int,
    registers: int,
    nvecs: Sequence[int] = _NVEC_PREFERENCE,
    narrow_rows: int = 8,
) -> tuple[int, int, int]:
    """(rows, vectors per row, vector length) of the register tile of an m x n output.

    Only exact divisors, so no loop needs a tail predicate that would break vectorization.
    The tile with the most accumulators that still fits the register file next to its
    operands (nvec loaded vectors + one broadcast) wins: that is the best load-to-FMA ratio.
    Tiles have at most 8 rows, one vector wide ones at most `narrow_rows` (see
    `cpu_conv2d.NARROW_TILE_ROWS`).
    """
    v = pick_vector(n, lanes)
    best: tuple[int, int, int] | None = None
    for nvec in nvecs:
        if (n // v) % nvec:
            continue
        for mr in range(narrow_rows if nvec == 1 else 8, 0, -1):
            if m % mr == 0 and mr * nvec + nvec + 1 <= registers:
                if best is None or mr * nvec > best[0] * best[1]:
                    best = (mr, nvec, v)
                break
    return best or (1, 1, v)


def tile_choices(
    m: int, n: int, lanes: int, registers: int, narrow_rows: int = 8
) -> list[tuple[int, int, int]]:
    """The tiles a tuning search may start from: `pick_tile`'s choice first, then its best
    tile for each other vectors-per-row count (one design space each: the weight packing
    follows the tile width, and a sampled decision cannot change a packing on replay)."""
    default = pick_tile(m, n, lanes, registers, narrow_rows=narrow_rows)
    others = (pick_tile(m, n, lanes, registers, (nvec,), narrow_rows) for nvec in _NVEC_PREFERENCE)
    return list(dict.fromkeys([default, *others]))


# At most this many design spaces (tile widths) per kernel: len(_NVEC_PREFERENCE).
MAX_TILE_CHOICES = 4
# The search's bound on a tile's sampled rows (or the default tile's rows, if more).
MAX_TILE_ROWS = 8


def tile_gemm(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    loops: GemmLoops,
    tile: tuple[int, int, int],
    tunable: bool = False,
    m_inside: bool = False,
) -> s_tir.schedule.SBlockRV:
    """Register-tiled GEMM loop nest: out[.., m, n] += a[.., m, k] * b[.., k, n].

    The output tile (mr rows x nvec vectors) accumulates in a local buffer LLVM keeps in
    registers; per reduction step it loads nvec vectors of `b` (contiguous along n) and
    broadcasts mr scalars of `a`. Tiles are distributed over threads; the n tile is outside
    the `rows` loops and the m tiles, so a panel of `b` stays in cache while they stream past.
    Returns the write-back block (local -> output), where epilogues get inlined.

    `tunable`: the tile's rows come from a sampling instruction whose decision is `mr`, so a
    search varies them; with that decision the schedule is exactly the untunable one.
    `m_inside`: only the n tiles are distributed, the m tiles run serially inside each one
    (its own loop, where a rule can stage that tile's panel of `b`).
    """
    mr, nvec, v = tile
    acc = sch.cache_write(block, 0, "local")
    n_o, n_i, n_v = sch.split(loops.n, factors=[None, nvec, v])
    if loops.m is None:
        tiles = [*loops.batch, n_o, *loops.rows]
        sch.reorder(*tiles, *loops.reduce, n_i, n_v)
    else:
        rows: list[Any] = [None, mr]
        if tunable:
            m = int(sch.get(loops.m).extent)
            rows = list(
                sch.sample_perfect_tile(
                    loops.m,
                    n=2,
                    max_innermost_factor=max(MAX_TILE_ROWS, mr),
                    decision=[m // mr, mr],
                )
            )
        m_o, m_i = sch.split(loops.m, factors=rows)
        tiles = [*loops.batch, n_o, *loops.rows, m_o]
        sch.reorder(*tiles, *loops.reduce, m_i, n_i, n_v)
        sch.unroll(m_i)
    sch.reverse_compute_at(acc, tiles[-1], preserve_unit_loops=True)
    if m_inside and loops.m is not None:
        tiles = tiles[:-1]
    sch.parallel(sch.fuse(*tiles) if len(tiles) > 1 else tiles[0])
    if v > 1:
        sch.vectorize(n_v)
    sch.unroll(n_i)
    sch.decompose_reduction(block, loops.reduce[0])
    return acc


@dataclass(frozen=True)
class GemmLoops:
    """The loops of a GEMM-shaped block, by role (see `tile_gemm`)."""

    batch: tuple[s_tir.schedule.LoopRV, ...]
    rows: tuple[s_tir.schedule.LoopRV, ...]
    m: s_tir.schedule.LoopRV | None
    n: s_tir.schedule.LoopRV
    reduce: tuple[s_tir.schedule.LoopRV, ...]


PREPACK_ATTR = "meta_schedule.layout_rewrite_preproc"


def is_layout_free(func: tvm.tirx.PrimFunc, buffer: Any) -> bool:
    """Whether `buffer` is a parameter the model binds to a constant (a weight).

    `relax.transform.AttachAttrLayoutFreeBuffers` records those parameters; their layout is
    free because a repacking of a constant is computed once, at compile time.
    """
    free = func.attrs.get("layout_free_buffers", []) if func.attrs else []
    return any(func.params[int(i)].same_as(buffer) for i in free)


def prepack_weight(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    read_index: int,
    order: Sequence[int],
    n_dim: int,
    nr: int,
) -> None:
    """Repack a constant operand as [n / nr, *dims in `order`, nr]: the micro-kernel then
    reads it as one contiguous stream (with a power-of-two row stride the plain layout maps
    every row to the same few cache sets). The repacking block is marked for
    `relax.transform.SplitLayoutRewritePreproc`, which moves it out of the kernel so
    FoldConstant computes it at compile time."""
    cache = sch.cache_read(block, read_index, "global")
    ndim = len(sch.get(cache).writes[0].region)

    def index_map(*idx: Any) -> list[Any]:
        return [idx[n_dim] // nr, *(idx[d] for d in order), idx[n_dim] % nr] + [
            idx[d] for d in range(ndim) if d != n_dim and d not in order
        ]

    sch.transform_layout(cache, ("write", 0), index_map)
    sch.annotate(cache, PREPACK_ATTR, True)


def fuse_epilogue(
    sch: s_tir.Schedule,
    writeback: s_tir.schedule.SBlockRV,
    epilogue: Sequence[s_tir.schedule.SBlockRV],
    lanes: int,
    slices: bool = False,
    depth: int = 0,
) -> s_tir.schedule.SBlockRV | None:
    """Apply the injective blocks after a tiled reduction to each tile as it is written.

    Intermediate blocks are inlined into their consumers (a value used twice, as in
    hardswish, is recomputed: cheaper than a buffer); the blocks left (those writing kernel
    outputs) move into the tile loop and read the accumulator directly. A block left that
    writes more values than the reduction produces (a pad, a concat, a broadcast) cannot:
    under the tile loop `reverse_compute_at` keeps only the iterations that read the tile
    and silently drops the rest (a pad's border was never written). Such blocks run as
    their own pass after the tiled loop nest instead. With `slices`, a block that writes
    fewer values (a slice dropping the padding `conv_tiles` added) follows the tile when
    every iteration reads it (no if_then_else); only for tiles that are boxes of the output
    the slice indexes the same way (a tile of a fused row * column index, as
    `PointwiseConv2d`'s, maps to a bounding box of rows: wrong values). `depth`: the
    writeback's loop that walks the tiles (1 under `tile_gemm(m_inside=True)`). Returns the
    block that now writes the tile, or None if the epilogue cannot be scheduled.
    """
    from tvm.error import InternalError
    from tvm.s_tir.schedule import ScheduleError

    try:
        remaining = []
        for block in epilogue:
            try:
                sch.compute_inline(block)
            except ScheduleError:
                remaining.append(block)
        if not remaining:
            return writeback
        produced = _elements(sch.get(writeback).writes[0].source.shape)
        if not all(_follows_tile(sch, block, produced, slices) for block in remaining):
            for block in remaining:
                schedule_spatial(sch, block, lanes)
            return writeback
        tile_loop = sch.get_loops(writeback)[depth]
        for block in remaining:
            sch.reverse_compute_at(block, tile_loop, preserve_unit_loops=True)
        sch.compute_inline(writeback)
    except (ScheduleError, InternalError):
        return None
    return remaining[-1]


def _follows_tile(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, produced: int | None, slices: bool
) -> bool:
    """Whether `reverse_compute_at` into the tile loop keeps all of an epilogue block's
    iterations: as many as the reduction produces, or (`slices`) fewer that each read it."""
    import tvm

    count = _instances(sch, block)
    if count is None or produced is None or count > produced:
        return False
    if count == produced:
        return True
    return slices and not tvm.get_global_func("s_tir.schedule.HasIfThenElse")(sch.get(block))


def _instances(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int | None:
    """How many times a block runs (the product of its iter domains), None if symbolic."""
    return _elements([iv.dom.extent for iv in sch.get(block).iter_vars])


def _elements(shape: Sequence[Any]) -> int | None:
    import tvm

    if not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return math.prod(int(d) for d in shape)


class TiledRule(ScheduleRule):
    """A rule whose register tile is a tuning knob: `apply` takes the default choice (what
    compile uses), `design_spaces` offers one space per tile width (`tile_choices`), the
    default first, each sampling the tile's rows (`tile_gemm`): what tuning searches."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        return self._schedule(func, target, 0, False)

    def design_spaces(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target
    ) -> list[s_tir.Schedule]:
        return [
            sch
            for choice in range(MAX_TILE_CHOICES)
            if (sch := self._schedule(func, target, choice, True)) is not None
        ]

    def _schedule(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, choice: int, tunable: bool
    ) -> s_tir.Schedule | None:
        """The rule's schedule with tile width `choice`, its rows sampled when `tunable`."""
        raise NotImplementedError
