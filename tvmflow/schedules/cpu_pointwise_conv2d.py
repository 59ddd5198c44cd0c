"""CPU rule for pointwise (1x1, stride 1, unpadded) conv2d kernels on NCHW activations.

A 1x1 conv over an NCHW map is a GEMM out[c, p] = sum_k w[c, k] * x[k, p] whose spatial
index p = (row, column) is contiguous in both the input and the output. `Conv2d` vectorizes
over output channels instead, so each tile it writes back to NCHW is a few floats in each of
many channel planes: on large maps with few channels (MobileNet's expand convs, 16-24 -> 96-144
channels at 56x56-112x112) that write-back dominated (20-40 GFLOP/s measured). Here the
rows and columns are fused into p and the register tile is (output channels x vectors of p):
it loads whole vectors of the input, broadcasts weights, and writes whole cache lines of each
output plane, with the epilogue (bias, residual, activation) applied on the way out.
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
    is_layout_free,
    open_schedule,
    prepack_weight,
    single_reduction,
    tile_gemm,
    vector_lanes,
    vector_registers,
)
from tvmflow.schedules.cpu_conv2d import conv_roles

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

# Vectors of p per tile row, most preferred first: the first that divides the plane wins
# (measured on AVX-512, 1 thread: 4x4 tiles, 4 loads per 16 FMAs, beat 2x7, 7 per 14, where
# both divide: 128 -> 256 at 56x56 151 -> 236 GFLOP/s, 144 -> 24 142 -> 158; 2x7 beat 3x7,
# 6x4, 8x2 and 2x8. 7 divides 7*2^k-wide maps with an odd number of vectors, as 28x28;
# 5 and 3 serve maps such as 60x60, 225 vectors). Even 8x1 tiles beat `Conv2d` on the maps
# measured.
_NVECS = (4, 7, 5, 3, 2, 1)
# Register budget of a tile (accumulators + row loads) per register file size: wider tiles
# spilled in LLVM's allocation (3x7 and 6x4 ran 2-5x slower than 2x7 and 4x4 on AVX-512).
_TILE_REGISTERS = {16: 12, 32: 22}
# Smaller planes (vectors of p) are left to `Conv2d`: few tiles per plane, nothing to win.
MIN_PLANE_VECTORS = 32
# The input panel a tile streams (input channels x tile width) is read in place while it fits
# in L1. A larger one is first copied per plane tile into a contiguous buffer the tile's
# channel tiles then stream from L2: read in place, its rows a plane apart thrashed (144->32
# channels at 28x28, a 64 KiB panel, ran 2x slower than `Conv2d`); copied, K=1024 -> 256 at
# 64x64 ran 225 GFLOP/s (`Conv2d` 124, in place 119), 256 -> 256 at 32x32 235 (`Conv2d` 176).
# Smaller panels lose by the copy (16 -> 96 at 112x112: 167 -> 82 GFLOP/s).
MAX_PANEL_BYTES = 48 * 1024
MIN_PACKED_ROWS = 4


class PointwiseConv2d(TiledRule):
    """Kernels with one 1x1 stride-1 unpadded conv block in NCHW whose output plane is a
    whole number of vectors (and long enough to pay: `MIN_PLANE_VECTORS`).

    Its tile is a tuning knob (`TiledRule`).
    """

    def _schedule(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, choice: int, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_schedule(func, target)
        if opened is None:
            return None
        sch, infos = opened
        index = single_reduction(infos)
        if index is None or index > 1:
            return None
        main = infos[index].block_rv
        roles = conv_roles(sch, main, lambda buf: is_layout_free(func, buf))
        if roles is None or not _nchw_roles(roles):
            return None
        sizes = extents(sch, sch.get_loops(main))
        if sizes is None or any(sizes[i] != 1 for i in roles["reduce"][1:]):
            return None
        if not _unit_stride(sch, main, roles):
            return None
        if index == 1 and not _inline_copy(sch, infos[0].block_rv):
            return None  # a real pad: leave the conv to Conv2d
        spatial = tuple(sizes[: roles["m"] + 1])  # [batch], channels, height, width
        bits = dtype_bits_of_block(sch, main)
        lanes = vector_lanes(target, bits)
        column_bytes = sizes[roles["reduce"][0]] * bits // 8
        tile = pointwise_tile(
            spatial[-3],
            spatial[-2] * spatial[-1],
            column_bytes,
            lanes,
            vector_registers(target),
            choice,
        )
        pack = None if tile is None else packs_panel(tile, column_bytes)
        if tile is None or pack is None:
            return None
        epilogue = [i.block_rv for i in infos[index + 1 :]]
        try:
            if any(p.same_as(sch.get(main).writes[0].source) for p in func.params):
                # the conv writes the kernel's output: a copy keeps that buffer's shape
                epilogue.insert(0, sch.cache_write(main, 0, "global"))
            _fuse_plane(sch, main, epilogue, spatial)
        except (ScheduleError, InternalError, ValueError):
            return None
        loops = sch.get_loops(main)  # [batch], channel, p, reduction (normalized: no unit loops)
        nb = len(roles["batch"])
        weight = sch.get(main).reads[roles["weight_read"]].source
        if is_layout_free(func, weight):
            prepack_weight(
                sch,
                main,
                roles["weight_read"],
                roles["weight_order"],
                roles["weight_n_dim"],
                tile[0],
            )
        gemm = GemmLoops(
            batch=tuple(loops[:nb]),
            rows=(),
            m=loops[nb],
            n=loops[nb + 1],
            reduce=tuple(loops[nb + 2 :]),
        )
        data_read = 1 - roles["weight_read"]
        copy = _panel_copy(sch, main, data_read, spatial[-1]) if pack else None
        writeback = tile_gemm(sch, main, gemm, tile, tunable, m_inside=pack)
        if copy is not None:
            sch.compute_at(copy, sch.get_loops(writeback)[0])
            sch.vectorize(sch.split(sch.get_loops(copy)[-1], factors=[None, lanes])[1])
        out = fuse_epilogue(sch, writeback, epilogue, lanes, depth=int(pack))
        if out is None:
            return None
        # the tile's rows are whole vectors of one output plane: store them as vectors
        column = sch.get_loops(out)[-1]
        if extents(sch, [column]) == [tile[1] * lanes]:
            sch.vectorize(sch.split(column, factors=[None, lanes])[1])
        return sch


def pointwise_tile(
    channels: int, plane: int, column_bytes: int, lanes: int, registers: int, choice: int = 0
) -> tuple[int, int, int] | None:
    """The `choice`-th tile this rule runs a 1x1 conv with (`channels` outputs, a `plane` of
    rows x columns, `column_bytes` per input column), or None where it leaves the conv to
    `Conv2d`: a plane of no whole vectors, or too short to pay."""
    if plane % lanes or plane // lanes < MIN_PLANE_VECTORS:
        return None
    tiles = _tiles(channels, plane, lanes, registers)
    return tiles[choice] if choice < len(tiles) else None


def packs_panel(tile: tuple[int, int, int], column_bytes: int) -> bool | None:
    """Whether a tile's input panel is staged in a contiguous copy (`MAX_PANEL_BYTES`), or
    None where the conv is left to `Conv2d`: a copied panel streams from L2, and a tile of
    fewer than 4 rows (2 x 7: 7 panel loads per 14 FMAs) cannot hide that (144 -> 32 and
    512 -> 128 at 28x28 ran 20-25% slower than `Conv2d`)."""
    mr, nvec, lanes = tile
    if column_bytes * nvec * lanes <= MAX_PANEL_BYTES:
        return False
    return True if mr >= MIN_PACKED_ROWS else None


def _panel_copy(
    sch: s_tir.Schedule, main: s_tir.schedule.SBlockRV, data_read: int, width: int
) -> s_tir.schedule.SBlockRV:
    """A copy of the input as [.., channel, row * width + column], iterated over that fused
    index: computed at a plane tile, it stages the tile's panel contiguously."""
    from tvm.tirx import IndexMap

    copy = sch.cache_read(main, data_read, "global")
    sch.transform_layout(main, ("read", data_read), lambda *i: [*i[:-2], i[-2] * width + i[-1]])
    ndim = len(sch.get(copy).iter_vars)
    sch.transform_block_layout(
        copy, IndexMap.from_func(lambda *i: [*i[:-2], i[-2] * width + i[-1]], ndim=ndim)
    )
    return copy


def _unit_stride(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, roles: dict[str, Any]
) -> bool:
    """Whether the input's column index is the output column plus a constant (stride 1)."""
    import tvm
    from tvm.sym.pattern import detect_linear_equation

    stmt = sch.get(block)
    m_var = stmt.iter_vars[roles["m"]].var
    data = stmt.reads[1 - roles["weight_read"]]
    coef = detect_linear_equation(data.region[-1].min, [m_var])
    return len(coef) == 2 and isinstance(coef[0], tvm.tirx.IntImm) and int(coef[0]) == 1


def _inline_copy(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Inline a producer that is a plain copy (Relax's pad_temp of an unpadded conv)."""
    import tvm

    if tvm.get_global_func("s_tir.schedule.HasIfThenElse")(sch.get(block)):
        return False
    try:
        sch.compute_inline(block)
    except (ScheduleError, InternalError):
        return False
    return True


def _tiles(channels: int, plane: int, lanes: int, registers: int) -> list[tuple[int, int, int]]:
    """(rows, vectors per row, lanes) tiles, the default first: per `_NVECS` entry that
    divides the plane the most rows (output channels) that divide `channels` and fit."""
    budget = _TILE_REGISTERS.get(registers, registers)
    tiles = []
    for nvec in _NVECS:
        if (plane // lanes) % nvec:
            continue
        rows = [mr for mr in range(8, 0, -1) if channels % mr == 0 and mr * nvec + nvec <= budget]
        if rows:
            tiles.append((rows[0], nvec, lanes))
    return tiles


def _nchw_roles(roles: dict[str, Any]) -> bool:
    """Iterations ordered [batch], channel, row, column, reductions; output NCHW."""
    nb = len(roles["batch"])
    return (
        nb <= 1
        and roles["batch"] == list(range(nb))
        and roles["n"] == nb
        and roles["rows"] == [nb + 1]
        and roles["m"] == nb + 2
        and roles["ndim"] == 4
        and roles["n_dim"] == 1
    )


def _fuse_plane(
    sch: s_tir.Schedule,
    main: s_tir.schedule.SBlockRV,
    epilogue: list[s_tir.schedule.SBlockRV],
    spatial: tuple[int, ...],
) -> None:
    """Give the conv and every epilogue block over the same spatial domain one index
    p = row * width + column (the conv's result buffer too), so a tile of p is a contiguous
    run of each output plane and the epilogue follows it exactly. An epilogue block over as
    many points in another shape could not follow the tile (ValueError)."""
    import math

    from tvm.tirx import IndexMap

    width = spatial[-1]

    def fuse_rows(block: s_tir.schedule.SBlockRV, ndim: int, at: int) -> None:
        """Fuse iters `at` (row) and `at + 1` (column) of a block with `ndim` iters."""
        sch.transform_block_layout(
            block,
            IndexMap.from_func(
                lambda *i: [*i[:at], i[at] * width + i[at + 1], *i[at + 2 :]], ndim=ndim
            ),
        )

    fuse_rows(main, len(sch.get(main).iter_vars), len(spatial) - 2)
    fused = [main]
    for block in epilogue:
        # blocks made by cache_write keep the unit batch dim normalization drops elsewhere
        domain = tuple(int(iv.dom.extent) for iv in sch.get(block).iter_vars)
        if _squeeze(domain) == _squeeze(spatial) and domain[-2:] == spatial[-2:]:
            fuse_rows(block, len(domain), len(domain) - 2)
            fused.append(block)
        elif math.prod(domain) == math.prod(spatial):
            raise ValueError("an epilogue over the conv's output in another shape")
    # The conv's result and the epilogue's intermediates get the fused index too, after the
    # blocks' iters are fused: this rewrite simplifies their accesses (p // width * width +
    # p % width -> p). Left with rows and columns, inlining an epilogue block substitutes
    # that sum unsimplified, and a tile crossing a row then maps to no box of the
    # accumulator, which stays in memory (a 192 -> 64 conv at 80x80 ran 2x slower).
    params = sch.mod["main"].params
    for block in fused:
        buffer = sch.get(block).writes[0].source
        shape = [int(d) for d in buffer.shape]
        if not any(p.same_as(buffer) for p in params) and shape[-2:] == list(spatial[-2:]):
            sch.transform_layout(block, ("write", 0), lambda *i: [*i[:-2], i[-2] * width + i[-1]])


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)
