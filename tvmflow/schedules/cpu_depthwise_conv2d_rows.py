"""CPU rule for stride-1 and -2 depthwise conv2d kernels on NCHW maps with rows of whole vectors.

`DepthwiseConv2d` vectorizes over channels, which needs a channel-last copy of the padded
input (a pass over the whole map) and writes each tile back to NCHW as a few floats in each
of many channel planes; on large maps (MobileNet's 112x112 and 56x56 layers) both passes are
memory traffic the convolution itself does not need. With stride 1 an output row is a
contiguous run of the padded input row, so here each tile is (output rows x vectors along
the row): every tap loads a vector of the padded row and multiplies it by one broadcast
weight. Each channel's plane is padded once into a buffer private to it (a 112 x 112 plane:
51 KiB, in L2), and its tiles then read that copy; the output rows are written whole, with the
epilogue applied on the way out. With stride 2 that buffer holds each padded row's even and
odd columns apart, so a tap still loads a contiguous vector (MobileNetV2's 96 x 112 x 112 ->
56 x 56 layer: 0.35 -> 0.28 ms, 32 channels 64 -> 32: 0.075 -> 0.027 ms against
`DepthwiseConv2d`, 1 thread). Padding per tile instead copied each input row (kernel - 1 +
rows) / rows times, twice with MobileNetV2's 2-row tiles: MobileNetV2's six depthwise layers
on maps of 28 to 112 ran 0.84 -> 0.66 ms (CPU time, 1 thread) once it went per plane.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    TiledRule,
    dtype_bits_of_block,
    extents,
    fuse_epilogue,
    open_single_reduction,
    pick_vector,
    vector_lanes,
)
from tvmflow.schedules.cpu_depthwise_conv2d import depthwise_roles

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

# Row vectors narrower than half the target's vectors (AVX-512: rows of 28 are 4-lane
# vectors) are left to `DepthwiseConv2d`, whose channel vectors are full width on any map.
MIN_ROW_VECTOR_FRACTION = 2
# Most extra columns (a share of the row) `conv_tiles` computes to give a depthwise conv
# rows of whole vectors: 14 -> 16 and 28 -> 32 (+14 %) ran 1.6x and 1.4x faster here than
# the channel-vector rule on the exact rows (MobileNetV2's 14x14 and 28x28 layers).
MAX_EXTRA_COLUMNS = 0.2
# Accumulators of a tile (rows x row vectors) per register file size.
_MAX_ACCUMULATORS = {16: 8, 32: 16}


class DepthwiseConv2dRows(TiledRule):
    """Kernels with one stride-1 or -2 depthwise conv block fed by an in-kernel padding block,
    whose output rows are whole vectors (`MIN_ROW_VECTOR_FRACTION`).

    Its tile is a tuning knob (`TiledRule`): one space per row-vector count.
    """

    def _schedule(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, choice: int, tunable: bool
    ) -> s_tir.Schedule | None:
        from tvmflow.schedules.cpu_common import vector_registers

        opened = open_single_reduction(func, target)
        if opened is None:
            return None
        sch, infos, index = opened
        if index != 1:  # pad, then the depthwise reduction
            return None
        pad, main = infos[0].block_rv, infos[1].block_rv
        roles = depthwise_roles(sch, main)
        if roles is None or len(roles["rows"]) != 1:
            return None
        stride = _stride(sch, main, roles)
        padded = sch.get(main).reads[roles["data_read"]].source
        if stride not in (1, 2) or (stride == 2 and int(padded.shape[-1]) % 2):
            return None  # odd padded rows do not split in two phases: `conv_tiles` evens them
        if not sch.get(pad).writes[0].source.same_as(padded):
            return None
        loops = sch.get_loops(main)
        sizes = extents(sch, loops)
        if sizes is None:
            return None
        full = vector_lanes(target, dtype_bits_of_block(sch, main))
        lanes = pick_vector(sizes[roles["m"]], full)
        if lanes * MIN_ROW_VECTOR_FRACTION < full or lanes < 4:
            return None
        tiles = _tiles(
            sizes[roles["rows"][0]],
            sizes[roles["m"]] // lanes,
            _MAX_ACCUMULATORS.get(vector_registers(target), 8),
        )
        if choice >= len(tiles):
            return None
        rows, nvec = tiles[choice]
        try:
            if stride == 2:
                _split_phases(sch, pad)
            out = _tile(sch, main, pad, loops, roles, (rows, nvec, lanes), tunable, stride)
            out = fuse_epilogue(sch, out, [i.block_rv for i in infos[2:]], lanes, slices=True)
            if out is None:
                return None
            column = sch.get_loops(out)[-1]
            width = extents(sch, [column])
            if width is not None:
                _vectorize_row(sch, column, width[0], lanes)
        except (ScheduleError, InternalError, ValueError):
            return None
        return sch


def padded_row(columns: int, stride: int, lanes: int) -> int:
    """Output columns to compute for a depthwise conv with rows `columns` wide and column
    stride `stride`, so this rule takes it with whole vectors (the extra ones are sliced
    off): `columns` itself when it already has whole half-width vectors, when the stride is
    one this rule does not take, or when full vectors would cost more than
    `MAX_EXTRA_COLUMNS` (7 -> 8 as half vectors measured no faster: left alone)."""
    if stride > 2 or columns % (lanes // 2) == 0:
        return columns
    wider = -(-columns // lanes) * lanes
    return wider if wider - columns <= MAX_EXTRA_COLUMNS * columns else columns


def _vectorize_row(
    sch: s_tir.Schedule, column: s_tir.schedule.LoopRV, width: int, lanes: int
) -> None:
    """Store the epilogue's rows as vectors: `lanes` wide, or, where a slice cut the padding
    `conv_tiles` added off the row (14 of 16 columns), as wide as a divisor of the row (a
    scalar epilogue also kept the accumulators out of registers: 2x slower)."""
    vector = next(d for d in range(min(width, lanes), 0, -1) if width % d == 0)
    if vector * 2 <= lanes:
        return
    sch.vectorize(sch.split(column, factors=[None, vector])[1] if vector < width else column)


def _tiles(height: int, row_vectors: int, accumulators: int) -> list[tuple[int, int]]:
    """(rows, row vectors) tiles, the default first: the widest run of a row that divides it,
    then the most rows that divide the map and fit the accumulator budget."""
    tiles = []
    for nvec in sorted(
        (d for d in range(1, row_vectors + 1) if row_vectors % d == 0), key=lambda d: -d
    ):
        if nvec > accumulators:
            continue
        rows = [r for r in range(accumulators // nvec, 0, -1) if height % r == 0]
        tiles.append((rows[0], nvec))
    return tiles[:4]


def _split_phases(sch: s_tir.Schedule, pad: s_tir.schedule.SBlockRV) -> None:
    """Store the padded rows of a stride-2 conv as their even and odd columns apart
    ([..., row, column % 2, column // 2]): the taps of a vector of outputs then read a
    contiguous run of one phase instead of every other float."""
    sch.transform_layout(pad, ("write", 0), lambda *i: [*i[:-1], i[-1] % 2, i[-1] // 2])


def _stride(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, roles: dict[str, Any]) -> int:
    """The column stride: the padded input's column index is stride * column + tap (0: not)."""
    import tvm
    from tvm.sym.pattern import detect_linear_equation

    stmt = sch.get(block)
    m_var = stmt.iter_vars[roles["m"]].var
    coef = detect_linear_equation(stmt.reads[roles["data_read"]].region[-1].min, [m_var])
    if len(coef) != 2 or not isinstance(coef[0], tvm.tirx.IntImm):
        return 0
    return int(coef[0])


def _tile(
    sch: s_tir.Schedule,
    main: s_tir.schedule.SBlockRV,
    pad: s_tir.schedule.SBlockRV,
    loops: list[s_tir.schedule.LoopRV],
    roles: dict[str, Any],
    tile: tuple[int, int, int],
    tunable: bool,
    stride: int = 1,
) -> s_tir.schedule.SBlockRV:
    """Tiles of `rows` output rows x `nvec` vectors, channels in parallel; the padded input
    of each channel plane is computed once, before its tiles. Returns the write-back."""
    rows, nvec, lanes = tile
    acc = sch.cache_write(main, 0, "local")
    batch = [loops[i] for i in roles["batch"]]
    channel, row, column = loops[roles["n"]], loops[roles["rows"][0]], loops[roles["m"]]
    reduce = [loops[i] for i in roles["reduce"]]
    factors: list[Any] = [None, rows]
    if tunable:
        height = int(sch.get(row).extent)
        factors = list(
            sch.sample_perfect_tile(
                row, n=2, max_innermost_factor=8, decision=[height // rows, rows]
            )
        )
    r_o, r_i = sch.split(row, factors=factors)
    c_o, c_i, c_v = sch.split(column, factors=[None, nvec, lanes])
    tiles = [*batch, channel, r_o, c_o]
    sch.reorder(*tiles, *reduce, r_i, c_i, c_v)
    sch.reverse_compute_at(acc, tiles[-1], preserve_unit_loops=True)
    planes = len(batch) + 1  # the loops over (batch, channel)
    sch.compute_at(pad, tiles[planes - 1], preserve_unit_loops=True)
    if stride == 2:
        _copy_phases(sch, pad, planes)
    else:
        # the border test per element kept the padding copy scalar; TVM's LoopPartition
        # splits hinted loops into border and interior parts, and the interior vectorizes
        for loop in sch.get_loops(pad)[-2:]:
            sch.annotate(loop, "pragma_loop_partition_hint", 1)
    sch.parallel(sch.fuse(*tiles[:planes]))
    sch.vectorize(c_v)
    sch.unroll(c_i)
    sch.unroll(r_i)
    sch.decompose_reduction(main, reduce[0])
    return acc


def _copy_phases(sch: s_tir.Schedule, pad: s_tir.schedule.SBlockRV, outer: int) -> None:
    """The per-plane padding of a stride-2 conv, split in two: zeros over the padded plane,
    phase by phase as vectors, then the input rows copied over them, two columns per
    step (one per phase). That copy has no border test left, so LLVM vectorizes its pairs as
    an interleaved group (wide loads and permutes); a vector gathered from every other
    column (TVM's strided vector load) cost one scalar load per float."""
    zeros = sch.decompose_padding(pad, sch.get_loops(pad)[outer])
    pairs = _pairs(sch, zeros)
    if pairs is not None:
        sch.reorder(pairs[1], pairs[0])
        sch.vectorize(pairs[0])
    pairs = _pairs(sch, pad)
    if pairs is not None:
        sch.unroll(pairs[1])


def _pairs(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV
) -> tuple[s_tir.schedule.LoopRV, s_tir.schedule.LoopRV] | None:
    """A block's column loop split into (pair, phase), or None for an odd one (an odd input
    row, copied into the even padded one as it is)."""
    column = sch.get_loops(block)[-1]
    width = extents(sch, [column])
    if width is None or width[0] % 2:
        return None
    pair, phase = sch.split(column, factors=[None, 2])
    return pair, phase
