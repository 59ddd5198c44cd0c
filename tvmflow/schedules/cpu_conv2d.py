"""CPU rule for conv2d kernels (NCHW activations, HWIO weights) with fused epilogues.

`passes.fuse` hands conv2d its weights as HWIO, so the output channel is the contiguous dim
of the weight: the convolution is then a GEMM (implicit im2col) with n = output channel,
m = output column, k = (input channel, kernel row, kernel column), and gets the same
register-tiled micro-kernel as matmul. The accumulator tile is kept channel-innermost so
it is whole vectors; the NCHW output is written from it once per tile, with the epilogue
(bias, residual add, activation) applied on the way out. A grouped conv (several channels
per group) first gets a group axis, so each group is a plain conv and the groups a batch of
GEMMs; depthwise convs (one input channel per group) are left to `DepthwiseConv2d`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
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

# Rows of a register tile one vector wide (16 channels, a grouped conv's 4-16 channels per
# group, a squeeze conv's 16 outputs) with 32 vector registers: 8 rows (8 accumulators) left
# the FMA pipes waiting on their latency; up to 14 ran 1.2-2x faster on AVX-512, 1 thread
# (RegNetY's 16-wide groups 137 -> 158 GFLOP/s at 14x14, ResNeXt's 8-wide 48 -> 94 at
# 28x28, a 128->16 1x1 conv at 55x55 114 -> 149). With AVX2's 16 registers 14 rows ran
# 10-30% slower than 8 (spills), so those keep 8. Wider tiles have 16-24 accumulators.
NARROW_TILE_ROWS = 14
# A conv whose reduction (input channels x kernel taps) is this short (a 3x3 conv over a
# 1-channel spectrogram, 9) spends little time in multiply-adds per output and most in the
# channel-vector tile's transposed NCHW write-back: it gets row tiles instead (`_row_gemm`).
ROW_TILE_MAX_REDUCTION = 27


def conv_roles(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, weight_is_constant: Any
) -> dict[str, Any] | None:
    """Iter positions of a conv block by GEMM role, or None when it is not GEMM-shaped.

    n is the output channel: the output dim the input does not depend on, which indexes the
    weight directly. The weight must be contiguous along n, unless it is a constant the rule
    repacks anyway (conv2d_transpose reads its weight flipped, as [i, o, 1 - kh, 1 - kw]).
    """
    import tvm

    stmt = sch.get(block)
    iters = list(stmt.iter_vars)
    kinds = "".join("R" if iv.iter_type == tvm.tirx.IterVar.CommReduce else "S" for iv in iters)
    if "R" not in kinds or "S" in kinds[kinds.index("R") :]:
        return None
    if len(stmt.reads) != 2 or len(stmt.writes) != 1:
        return None
    out_index = index_vars(stmt.writes[0])
    out = [v for v in out_index if v is not None]
    if len(out) < 2:
        return None
    m_var = out[-1]
    data, weight = stmt.reads
    weight_read = 1
    if uses(weight, m_var):
        data, weight = weight, data
        weight_read = 0
    if not uses(data, m_var) or uses(weight, m_var):
        return None
    # the input must not depend on the output channel (depthwise/grouped convs do)
    channels = [v for v in out if uses(weight, v) and not uses(data, v)]
    if len(channels) != 1:
        return None
    n_var = channels[0]
    weight_index = index_vars(weight)
    n_dim = _dim_of(weight_index, n_var)
    if n_dim == len(weight_index):
        return None
    if n_dim != len(weight_index) - 1 and not weight_is_constant(weight.source):
        return None
    reduce = [i for i, k in enumerate(kinds) if k == "R"]
    order = [_dim_using(weight, iters[i].var) for i in reduce]
    if None in order or len(set(order)) != len(order):
        return None  # a reduction var not indexing its own weight dim: not a plain conv
    position = {iv.var: i for i, iv in enumerate(iters)}
    n_at = next(i for i, v in enumerate(out) if v.same_as(n_var))
    return {
        "batch": [position[v] for v in out[:n_at]],
        "rows": [position[v] for v in out[n_at + 1 : -1]],
        "m": position[m_var],
        "n": position[n_var],
        "reduce": reduce,
        "weight_read": weight_read,
        # a prepacked weight is laid out in the order the reduction loops walk it
        "weight_order": order,
        "weight_n_dim": n_dim,
        "n_dim": next(i for i, v in enumerate(out_index) if v is not None and v.same_as(n_var)),
        "ndim": len(out_index),
    }


def _dim_of(index: list[Any], var: Any) -> int:
    return next((d for d, x in enumerate(index) if x is not None and x.same_as(var)), len(index))


def _dim_using(region: Any, var: Any) -> int | None:
    """The one dim of an access whose index uses `var` (kh for `1 - kh`), else None."""
    from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr

    dims = [
        d
        for d, r in enumerate(region.region)
        if any(v.same_as(var) for v in collect_vars_used_in_prim_expr(r.min))
    ]
    return dims[0] if len(dims) == 1 else None


class Conv2d(TiledRule):
    """Kernels with one GEMM-shaped convolution block; producers (pad) and epilogues injective.

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
        producers = _inline_weight_transforms(sch, func, infos[:index])
        roles = conv_roles(sch, main.block_rv, lambda buf: is_layout_free(func, buf))
        loops = [it.loop_rv for it in main.iters]
        epilogue = [i.block_rv for i in infos[index + 1 :]]
        grouped = roles is None and _group_split(sch.get(main.block_rv)) is not None
        if grouped:
            lanes = vector_lanes(target, dtype_bits_of_block(sch, main.block_rv))
            added = _split_groups(sch, func, main.block_rv, lanes)
            if added is None:
                return None
            epilogue += added
            roles = conv_roles(sch, main.block_rv, lambda buf: is_layout_free(func, buf))
            if roles is None:
                return None
            loops = sch.get_loops(main.block_rv)
        if roles is None:
            return _single_channel(
                sch, main, infos[index + 1 :], producers, target, choice, tunable
            )
        sizes = extents(sch, loops)
        if sizes is None:
            return None
        lanes = vector_lanes(target, dtype_bits_of_block(sch, main.block_rv))
        registers = vector_registers(target)
        # grouped convs keep channel tiles: row tiles were not measured there
        stride = None if grouped else _row_tiled(sch, main.block_rv, roles, sizes, lanes)
        if stride is not None:
            if choice > 0:
                return None  # one tile shape (its rows are still sampled when tuning)
            if stride == 2:
                _column_phases(sch, main.block_rv, roles)
            tile = row_tile(sizes[roles["n"]], sizes[roles["m"]], lanes, registers)
            gemm = _row_gemm(sch, func, main.block_rv, roles, loops, tile)
            writeback = tile_gemm(sch, main.block_rv, gemm, tile, tunable)
            if fuse_epilogue(sch, writeback, epilogue, lanes) is None:
                return None
            _schedule_producers(sch, producers, lanes)
            return sch
        narrow = NARROW_TILE_ROWS if registers >= 32 else 8
        tiles = tile_choices(sizes[roles["m"]], sizes[roles["n"]], lanes, registers, narrow)
        if choice >= len(tiles):
            return None
        tile = tiles[choice]
        gemm = GemmLoops(
            batch=tuple(loops[i] for i in roles["batch"]),
            rows=tuple(loops[i] for i in roles["rows"]),
            m=loops[roles["m"]],
            n=loops[roles["n"]],
            reduce=tuple(loops[i] for i in roles["reduce"]),
        )
        weight = sch.get(main.block_rv).reads[roles["weight_read"]].source
        if is_layout_free(func, weight):
            prepack_weight(
                sch,
                main.block_rv,
                roles["weight_read"],
                roles["weight_order"],
                roles["weight_n_dim"],
                tile[1] * tile[2],
            )
        writeback = tile_gemm(sch, main.block_rv, gemm, tile, tunable)
        # accumulator with the channel innermost: whole vectors, promotable to registers
        n_dim, ndim = roles["n_dim"], roles["ndim"]
        sch.transform_layout(
            main.block_rv,
            ("write", 0),
            lambda *idx: [*(idx[i] for i in range(ndim) if i != n_dim), idx[n_dim]],
        )
        if fuse_epilogue(sch, writeback, epilogue, lanes) is None:
            return None
        _schedule_producers(sch, producers, lanes)
        return sch


def _row_tiled(
    sch: s_tir.Schedule,
    block: s_tir.schedule.SBlockRV,
    roles: dict[str, Any],
    sizes: list[int],
    lanes: int,
) -> int | None:
    """The column stride (1 or 2) of a conv that gets row tiles: a short reduction, more
    output channels than one vector holds and output rows of whole vectors; None for
    other convs."""
    import tvm
    from tvm.sym.pattern import detect_linear_equation

    reduction = 1
    for i in roles["reduce"]:
        reduction *= sizes[i]
    if reduction > ROW_TILE_MAX_REDUCTION or pick_vector(sizes[roles["m"]], lanes) < min(lanes, 8):
        return None
    if sizes[roles["n"]] <= lanes:
        # one channel vector: its channel tile is as good (3->16 s2 stem, 1 thread: 0.102 vs
        # 0.110 ms at batch 1, 1.66 vs 1.55 ms at batch 8; row tiles won from 32 channels on)
        return None
    stmt = sch.get(block)
    data = stmt.reads[1 - roles["weight_read"]]
    coef = detect_linear_equation(data.region[-1].min, [stmt.iter_vars[roles["m"]].var])
    if len(coef) != 2 or not isinstance(coef[0], tvm.tirx.IntImm):
        return None
    return int(coef[0]) if int(coef[0]) in (1, 2) else None


def _column_phases(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, roles: dict[str, Any]
) -> None:
    """A stride-2 conv's input staged as (..., column % 2, column // 2): each tap then reads
    its row tile's columns contiguously (one vector load, where the strided row was a load
    per lane). The padding stays its own vectorized pass before the copy (computed inside
    the copy's strided loop, it kept that loop scalar: MobileNetV2's stem 0.172 vs 0.155 ms)."""
    staged = sch.cache_read(block, 1 - roles["weight_read"], "global")
    sch.transform_layout(
        staged,
        ("write", 0),
        lambda *i: [*i[:-1], i[-1] % 2, i[-1] // 2],
        pad_value=0.0,
    )
    half, phase = sch.split(sch.get_loops(staged)[-1], factors=[None, 2])
    sch.reorder(phase, half)


def row_tile(channels: int, columns: int, lanes: int, registers: int) -> tuple[int, int, int]:
    """(channels, vectors, lanes) of a row tile: two channels by as many row vectors as
    divide the row and fit the registers (2 accumulators + 1 load each, 2 broadcasts).
    Tiles over more output channels ran 3-5x slower (0.27 -> 1.1-1.4 ms on a 1->32 conv
    at 400x128, 0.87 -> 3.6 ms at 900x120; 1 thread, AVX-512), whatever their accumulator
    count: each channel is another output plane the tile's stores stream into."""
    v = pick_vector(columns, lanes)
    rows = 2 if channels % 2 == 0 else 1
    most = max(1, (registers - rows) // (rows + 1))
    nvec = next(n for n in range(min(most, columns // v), 0, -1) if (columns // v) % n == 0)
    return rows, nvec, v


def _row_gemm(
    sch: s_tir.Schedule,
    func: tvm.tirx.PrimFunc,
    block: s_tir.schedule.SBlockRV,
    roles: dict[str, Any],
    loops: list[Any],
    tile: tuple[int, int, int],
) -> GemmLoops:
    """Row tiles: the GEMM with the roles swapped. Output channels are the tile's rows (a
    broadcast weight each), output columns its vectors (loaded straight from the input
    row), so the accumulator is laid out as the NCHW output and the write-back is whole row
    vectors instead of a channel-vector transpose. A tile's channels are the outermost
    loop, its output rows next: `tile[0]` output planes are written in turn. The weight is
    repacked with each tile's channels contiguous."""
    channels, channel = sch.split(loops[roles["n"]], factors=[None, tile[0]])
    sch.reorder(*(loops[i] for i in roles["batch"]), channels)
    weight = sch.get(block).reads[roles["weight_read"]].source
    if is_layout_free(func, weight):
        prepack_weight(
            sch, block, roles["weight_read"], roles["weight_order"], roles["weight_n_dim"], tile[0]
        )
    return GemmLoops(
        batch=(*(loops[i] for i in roles["batch"]), channels, *(loops[i] for i in roles["rows"])),
        rows=(),
        m=channel,
        n=loops[roles["m"]],
        reduce=tuple(loops[i] for i in roles["reduce"]),
    )


def _group_split(block: Any) -> tuple[int, int, int, int, int] | None:
    """A grouped conv's data read indexes its channel as `oc // go * gi + ric` (TOPI's
    group_conv2d): (iter position of oc, go, gi, data read, data channel dim), else None."""
    import tvm

    iters = {iv.var: i for i, iv in enumerate(block.iter_vars)}
    for r, region in enumerate(block.reads):
        for d, rng in enumerate(region.region):
            e = rng.min
            if not (isinstance(e, tvm.tirx.Add) and isinstance(e.a, tvm.tirx.Mul)):
                continue
            div, gi, ric = e.a.a, e.a.b, e.b
            if not (
                isinstance(div, tvm.tirx.FloorDiv)
                and isinstance(div.a, tvm.tirx.Var)
                and isinstance(div.b, tvm.tirx.IntImm)
                and isinstance(gi, tvm.tirx.IntImm)
                and isinstance(ric, tvm.tirx.Var)
                and div.a in iters
                and ric in iters
            ):
                continue
            oc, go = iters[div.a], int(div.b)
            if go > 1 and int(gi) > 1 and block.iter_vars[oc].iter_type == tvm.tirx.IterVar.DataPar:
                return oc, go, int(gi), r, d
    return None


def _split_groups(
    sch: s_tir.Schedule, func: tvm.tirx.PrimFunc, block: Any, lanes: int
) -> list[s_tir.schedule.SBlockRV] | None:
    """Give a grouped conv a group axis: its iteration, output and weight are split as
    (group, channel in group), the input's channel as (group, channel in group) too (a
    copy first where the input is a parameter), after which each group is a plain conv (a
    GEMM batched over groups) the Conv2d path schedules. The weight copy in the split
    layout (group, ..., channel in group) is a prepacking folded at compile time. Returns
    the blocks added after the conv (the copy to the kernel's output when the conv writes
    it directly), None on failure."""
    from tvm.tirx import IndexMap

    from tvmflow.schedules.cpu_common import PREPACK_ATTR

    stmt = sch.get(block)
    found = _group_split(stmt)
    if found is None or len(stmt.reads) != 2 or len(stmt.writes) != 1:
        return None
    oc, go, gi, data_read, data_dim = found
    oc_var = stmt.iter_vars[oc].var
    out_dims = [
        d for d, v in enumerate(index_vars(stmt.writes[0])) if v is not None and v.same_as(oc_var)
    ]
    weight_read = 1 - data_read
    weight = stmt.reads[weight_read]
    w_dims = [d for d, v in enumerate(index_vars(weight)) if v is not None and v.same_as(oc_var)]
    if len(out_dims) != 1 or len(w_dims) != 1:
        return None
    c, w, e = out_dims[0], w_dims[0], data_dim
    ndim_out, ndim_w, ndim_data = _ndim(stmt, -1), _ndim(stmt, weight_read), _ndim(stmt, data_read)
    added = []
    try:
        if any(p.same_as(stmt.writes[0].source) for p in func.params):
            added.append(sch.cache_write(block, 0, "global"))  # a parameter keeps its shape
        sch.transform_block_layout(
            block,
            IndexMap.from_func(
                lambda *i: [*i[:oc], i[oc] // go, i[oc] % go, *i[oc + 1 :]],
                ndim=len(stmt.iter_vars),
            ),
        )
        sch.transform_layout(
            block,
            ("write", 0),
            IndexMap.from_func(
                lambda *i: [*i[:c], i[c] // go, i[c] % go, *i[c + 1 :]], ndim=ndim_out
            ),
        )
        if any(p.same_as(stmt.reads[data_read].source) for p in func.params):
            schedule_spatial(sch, sch.cache_read(block, data_read, "global"), lanes)
        sch.transform_layout(
            block,
            ("read", data_read),
            IndexMap.from_func(
                lambda *i: [*i[:e], i[e] // gi, i[e] % gi, *i[e + 1 :]], ndim=ndim_data
            ),
        )
        cache = sch.cache_read(block, weight_read, "global")
        sch.transform_layout(
            cache,
            ("write", 0),
            IndexMap.from_func(
                lambda *i: [i[w] // go, *(x for d, x in enumerate(i) if d != w), i[w] % go],
                ndim=ndim_w,
            ),
        )
        if is_layout_free(func, weight.source):  # a constant: repacked at compile time
            sch.annotate(cache, PREPACK_ATTR, True)
        else:
            schedule_spatial(sch, cache, lanes)
    except (ScheduleError, InternalError, ValueError):
        return None
    return added


def _ndim(stmt: Any, read: int) -> int:
    """Rank of a block's read `read` (-1: its write)."""
    return len((stmt.writes[0] if read < 0 else stmt.reads[read]).region)


def _single_channel(
    sch: s_tir.Schedule,
    main: Any,
    epilogue: list[Any],
    producers: list[s_tir.schedule.SBlockRV],
    target: tvm.target.Target,
    choice: int,
    tunable: bool,
) -> s_tir.Schedule | None:
    """A conv with one output channel (a segmentation head) has no channel to vectorize:
    vectorize along the output row instead, where a stride-1 input is contiguous too, and
    tile output rows x row vectors with the weights broadcast."""
    import tvm
    from tvm.sym.pattern import detect_linear_equation

    stmt = sch.get(main.block_rv)
    iters = list(stmt.iter_vars)
    out = [v for v in index_vars(stmt.writes[0]) if v is not None]
    reduce = [i for i, iv in enumerate(iters) if iv.iter_type == tvm.tirx.IterVar.CommReduce]
    if len(out) < 2 or len(stmt.reads) != 2 or not reduce:
        return None
    col, row = out[-1], out[-2]
    reads = list(stmt.reads)
    data = [r for r in reads if uses(r, col)]
    others = [r for r in reads if not uses(r, col)]
    if len(data) != 1 or any(uses(r, v) for r in others for v in out):
        return None  # the weight depends on an output dim: a channel after all
    coef = detect_linear_equation(data[0].region[-1].min, [col])
    if len(coef) != 2 or not isinstance(coef[0], tvm.tirx.IntImm) or int(coef[0]) != 1:
        return None  # strided: the row is not contiguous in the input
    loops = [it.loop_rv for it in main.iters]
    sizes = extents(sch, loops)
    if sizes is None:
        return None
    position = {iv.var: i for i, iv in enumerate(iters)}
    lanes = vector_lanes(target, dtype_bits_of_block(sch, main.block_rv))
    tiles = tile_choices(
        sizes[position[row]], sizes[position[col]], lanes, vector_registers(target)
    )
    if choice >= len(tiles):
        return None
    tile = tiles[choice]
    gemm = GemmLoops(
        batch=tuple(loops[position[v]] for v in out[:-2]),
        rows=(),
        m=loops[position[row]],
        n=loops[position[col]],
        reduce=tuple(loops[i] for i in reduce),
    )
    writeback = tile_gemm(sch, main.block_rv, gemm, tile, tunable)
    if fuse_epilogue(sch, writeback, [i.block_rv for i in epilogue], lanes) is None:
        return None
    _schedule_producers(sch, producers, lanes)
    return sch


def _inline_weight_transforms(
    sch: s_tir.Schedule, func: tvm.tirx.PrimFunc, producers: list[Any]
) -> list[s_tir.schedule.SBlockRV]:
    """Inline blocks that only rearrange constants (conv2d_transpose flips its kernel) into
    the conv, where the weight prepacking then folds them away; returns the other producers."""
    rest = []
    for info in producers:
        reads = sch.get(info.block_rv).reads
        if reads and all(is_layout_free(func, r.source) for r in reads):
            try:
                sch.compute_inline(info.block_rv)
                continue
            except (ScheduleError, InternalError):
                pass
        rest.append(info.block_rv)
    return rest


def _schedule_producers(
    sch: s_tir.Schedule, producers: list[s_tir.schedule.SBlockRV], lanes: int
) -> None:
    """Input producers (padding, conv2d_transpose's dilation): chains collapse into the last
    one; a plain copy is inlined into the conv, padding is materialized once (a branch per
    load in the micro-kernel costs more than one pass over the input)."""
    import tvm

    for block in producers[:-1]:
        try:
            sch.compute_inline(block)
        except (ScheduleError, InternalError):
            schedule_spatial(sch, block, lanes)
    if not producers:
        return
    last = producers[-1]
    if not tvm.get_global_func("s_tir.schedule.HasIfThenElse")(sch.get(last)):
        try:
            sch.compute_inline(last)
            return
        except (ScheduleError, InternalError):
            pass
    schedule_spatial(sch, last, lanes)
