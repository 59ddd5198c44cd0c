"""CPU rule for depthwise conv2d kernels (NCHW activations, HWIO weights) with epilogues.

A depthwise output channel reads only its own input channel, so there is no reduction over
channels to vectorize as a GEMM; instead the channels are vectorized directly. The padded
input is a buffer private to the kernel, so it is written channel-last ([n, h, w, c]) by
the padding pass: every tap then loads whole vectors of channels, for any stride, and the
weights ([kh, kw, 1, c]) are already contiguous in c. The accumulator tile (output columns
x channel vectors) lives in registers and is written back to NCHW with the epilogue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tvmflow.schedules.cpu_common import (
    GemmLoops,
    TiledRule,
    dtype_bits_of_block,
    extents,
    fuse_epilogue,
    index_vars,
    open_single_reduction,
    pick_vector,
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


def depthwise_roles(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> dict[str, Any] | None:
    """Roles of a depthwise conv block: channel (n), output column (m), rows, reduction."""
    import tvm

    stmt = sch.get(block)
    iters = list(stmt.iter_vars)
    kinds = "".join("R" if iv.iter_type == tvm.tirx.IterVar.CommReduce else "S" for iv in iters)
    if "R" not in kinds or "S" in kinds[kinds.index("R") :]:
        return None
    if len(stmt.reads) != 2 or len(stmt.writes) != 1:
        return None
    out = [v for v in index_vars(stmt.writes[0]) if v is not None]
    if len(out) < 3:
        return None
    m_var = out[-1]
    data, weight = stmt.reads
    data_read = 0
    if uses(weight, m_var):
        data, weight = weight, data
        data_read = 1
    n_var = index_vars(weight)[-1]
    if n_var is None or not uses(out, n_var) or uses(weight, m_var):
        return None
    channel_dims = [d for d, v in enumerate(index_vars(data)) if v is not None and v.same_as(n_var)]
    if len(channel_dims) != 1 or not uses(data, m_var):
        return None  # grouped convs with several channels per group index data by c + rc
    position = {iv.var: i for i, iv in enumerate(iters)}
    n_at = next(i for i, v in enumerate(out) if v.same_as(n_var))
    if n_at > 1 or any(uses(weight, v) for v in out[:n_at]):
        return None  # one batch dim at most (absent at batch 1), which the weight ignores
    return {
        "batch": [position[v] for v in out[:n_at]],
        "rows": [position[v] for v in out[n_at + 1 : -1]],
        "m": position[m_var],
        "n": position[n_var],
        "reduce": [i for i, k in enumerate(kinds) if k == "R"],
        "data_read": data_read,
        "channel_dim": channel_dims[0],
    }


class DepthwiseConv2d(TiledRule):
    """Kernels with one depthwise conv block fed by an in-kernel padding block.

    Its tile is a tuning knob (`TiledRule`).
    """

    def _schedule(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, choice: int, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_single_reduction(func, target)
        if opened is None:
            return None
        sch, infos, index = opened
        if index != 1:  # pad, then the depthwise reduction
            return None
        pad, main = infos[0], infos[1]
        roles = depthwise_roles(sch, main.block_rv)
        if roles is None:
            return None
        padded = sch.get(main.block_rv).reads[roles["data_read"]].source
        if not sch.get(pad.block_rv).writes[0].source.same_as(padded):
            return None
        loops = [it.loop_rv for it in main.iters]
        sizes = extents(sch, loops)
        if sizes is None:
            return None
        lanes = vector_lanes(target, dtype_bits_of_block(sch, main.block_rv))
        tiles = tile_choices(sizes[roles["m"]], sizes[roles["n"]], lanes, vector_registers(target))
        if choice >= len(tiles):
            return None
        tile = tiles[choice]
        _channel_last(sch, pad.block_rv, roles["channel_dim"])
        gemm = GemmLoops(
            batch=tuple(loops[i] for i in roles["batch"]),
            rows=tuple(loops[i] for i in roles["rows"]),
            m=loops[roles["m"]],
            n=loops[roles["n"]],
            reduce=tuple(loops[i] for i in roles["reduce"]),
        )
        writeback = tile_gemm(sch, main.block_rv, gemm, tile, tunable)
        out_dims = len(sch.get(main.block_rv).writes[0].region)
        out_channel = next(
            d
            for d, v in enumerate(index_vars(sch.get(main.block_rv).writes[0]))
            if v is not None and v.same_as(main.iters[roles["n"]].var)
        )
        _move_dim_last(sch, main.block_rv, out_channel, out_dims)
        if fuse_epilogue(sch, writeback, [i.block_rv for i in infos[2:]], lanes) is None:
            return None
        _schedule_transpose(sch, pad.block_rv, lanes, len(roles["batch"]))
        return sch


def _move_dim_last(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, dim: int, ndim: int
) -> None:
    sch.transform_layout(
        block, ("write", 0), lambda *idx: [*(idx[i] for i in range(ndim) if i != dim), idx[dim]]
    )


def _channel_last(sch: s_tir.Schedule, pad: s_tir.schedule.SBlockRV, channel_dim: int) -> None:
    """Make the padding block write the padded input channel-last."""
    ndim = len(sch.get(pad).writes[0].region)
    _move_dim_last(sch, pad, channel_dim, ndim)


def _schedule_transpose(
    sch: s_tir.Schedule, pad: s_tir.schedule.SBlockRV, lanes: int, batch: int
) -> None:
    """Pad + NCHW->NHWC in tiles: a tile reads a few channel planes along a row and writes
    whole channel vectors, so neither side strides across pages element by element
    (a plain channel-innermost loop gathers from a new page per lane: 9x slower)."""
    loops = sch.get_loops(pad)
    sizes = extents(sch, loops)
    if sizes is None or len(loops) < 3 + batch:
        schedule_spatial(sch, pad, lanes)
        return
    # normalized loops: batch (absent at batch 1), channel, rows..., column
    outer, (channel, *rows, column) = loops[:batch], loops[batch:]
    v = pick_vector(sizes[batch], lanes)
    w = next(d for d in range(16, 0, -1) if sizes[-1] % d == 0)
    c_o, c_i = sch.split(channel, factors=[None, v])
    w_o, w_i = sch.split(column, factors=[None, w])
    sch.reorder(*outer, *rows, c_o, w_o, w_i, c_i)
    if v > 1:
        sch.vectorize(c_i)
    sch.parallel(sch.fuse(*outer, *rows, c_o))
