"""CPU rule for the int8 convolutions of QDQ models (`tvmflow.qdq`'s `qconv2d` kernels):
VNNI dot products.

The kernel's three blocks come from `tvmflow.qdq.conv2d_compute`: the pack (activation
padded with its zero point, channels last in groups of 4: [N, H, W, C/4, 4]), the u8 x i8
-> i32 convolution over the weight packed at compile time as [O/16, KH, KW, C/4, 16, 4], and
the requantize into NHWC. Here the convolution becomes a register tile of `cols` output
columns x `vecs` vectors of 16 output channels, accumulated in registers: each `vpdpbusd`
multiplies 4 broadcast input-channel bytes of one column against a 64-byte weight row
(16 channels x 4). The reduction walks (kernel row, kernel column, channel group), so both
operands stream contiguously. The tile's requantize runs as soon as the tile is done, from
the registers, vectorized over the 16 channels. Targets without AVX512-VNNI get no
schedule (`tvmflow.qdq` does not make these kernels there).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import MIN_PARALLEL_WORK, extents, is_cpu, schedule_spatial
from tvmflow.schedules.cpu_int8_matmul import GROUP, LANES, has_vnni, register_vnni_intrin

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

# accumulators (cols x vecs) + weight vectors (vecs) + 1 broadcast <= 32 zmm registers
MAX_ACCUMULATORS = 24
COLS = (8, 7, 6, 5, 4, 3, 2, 1)
VECS = (4, 3, 2, 1)


def register_tile(columns: int, vectors: int) -> tuple[int, int]:
    """The default tile: the most accumulators that fit, columns and vectors dividing the
    output exactly (a tail would leave the tensorized loop with a predicate)."""
    fits = [
        (c, v)
        for c in COLS
        for v in VECS
        if columns % c == 0 and vectors % v == 0 and c * v <= MAX_ACCUMULATORS
    ]
    return max(fits, key=lambda t: (t[0] * t[1], t[0]))


class QdqKernelRule(ScheduleRule):
    """A `tvmflow.qdq` kernel found by its three block names (pack, integer conv,
    requantize), on the AVX512-VNNI targets the pass makes them for; `_schedule` does the rest."""

    blocks: tuple[str, str, str]

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        from tvm import s_tir

        if not is_cpu(target) or not has_vnni(target):
            return None
        sch = s_tir.Schedule(func)
        try:
            pack, conv, requant = (sch.get_sblock(name) for name in self.blocks)
        except (ScheduleError, InternalError, ValueError):
            return None
        try:
            return self._schedule(sch, pack, conv, requant, nhwc_input(func))
        except (ScheduleError, InternalError):
            return None

    def _schedule(self, sch: s_tir.Schedule, pack: Any, conv: Any, requant: Any, nhwc: bool) -> Any:
        raise NotImplementedError


class Int8Conv2d(QdqKernelRule):
    """`qconv2d` kernels (pack, u8 x i8 conv, requantize) on AVX512-VNNI targets."""

    def __init__(self) -> None:
        from tvmflow.qdq import CONV_BLOCK, PACK_BLOCK, REQUANT_BLOCK

        self.blocks = (PACK_BLOCK, CONV_BLOCK, REQUANT_BLOCK)

    def _schedule(self, sch: s_tir.Schedule, pack: Any, conv: Any, requant: Any, nhwc: bool) -> Any:
        loops = sch.get_loops(conv)
        sizes = extents(sch, loops)
        if sizes is None or len(loops) != 8 or sizes[3] % LANES or sizes[-1] != GROUP:
            return None
        schedule_pack(sch, pack, nhwc)
        cols, vecs = register_tile(sizes[2], sizes[3] // LANES)
        acc = sch.cache_write(conv, 0, "local")
        n, y, x, o, ry, rx, rc, ri = sch.get_loops(conv)
        o_out, o_vec, o_lane = sch.split(o, factors=[None, vecs, LANES])
        x_out, x_in = sch.split(x, factors=[None, cols])
        sch.reorder(n, o_out, y, x_out, ry, rx, rc, x_in, o_vec, o_lane, ri)
        sch.reverse_compute_at(acc, x_out, preserve_unit_loops=True)
        outer = sch.fuse(n, o_out, y)
        if math.prod(sizes[:4]) >= MIN_PARALLEL_WORK:
            sch.parallel(outer)
        sch.decompose_reduction(conv, ry)
        sch.tensorize(o_lane, register_vnni_intrin())
        sch.unroll(x_in)
        sch.unroll(o_vec)
        if sizes[3] != _channels(sch, requant):  # padded channels: requantize separately
            schedule_spatial(sch, requant, LANES)
            return sch
        requantize_tile(sch, requant, acc, x_out)
        return sch


def requantize_tile(sch: s_tir.Schedule, requant: Any, acc: Any, tile: Any) -> None:
    """The tile's requantize right after it, from the accumulators, 16 channels a vector
    (NHWC: contiguous stores)."""
    sch.reverse_compute_at(requant, tile, preserve_unit_loops=True)
    sch.compute_inline(acc)
    lane_loop = sch.get_loops(requant)[-1]
    if sch.get(lane_loop).extent.value % LANES == 0:
        _, lane = sch.split(lane_loop, factors=[None, LANES])
        sch.vectorize(lane)


def _channels(sch: s_tir.Schedule, requant: Any) -> int:
    return int(sch.get(requant).writes[0].source.shape[3])


def nhwc_input(func: tvm.tirx.PrimFunc) -> bool:
    from tvmflow.qdq import LAYOUT_ATTR

    return bool(func.attrs and str(func.attrs.get(LAYOUT_ATTR, "")) == "NHWC")


def schedule_pack(sch: s_tir.Schedule, pack: Any, nhwc: bool) -> None:
    """A pack that is a plain load (NHWC uint8, no padding) is inlined: the conv reads the
    input itself. Otherwise it runs once over the whole input, rows in parallel; from NHWC
    its channels (groups of 4 fused) are contiguous 16-byte vectors, from NCHW a transpose
    (the 4-byte groups unrolled)."""
    import tvm

    body = sch.get(pack).body
    if isinstance(body, tvm.tirx.stmt.BufferStore) and isinstance(body.value, tvm.ir.TensorLoad):
        sch.compute_inline(pack)
        return
    n, y, *rest = sch.get_loops(pack)
    sizes = extents(sch, [n, y, *rest])
    if sizes is None:
        return
    channels = rest[-2:] if len(rest) == 3 else rest[-1:]
    width = math.prod(sizes[-len(channels) :])
    if nhwc and width % LANES == 0:
        fused = sch.fuse(*channels) if len(channels) > 1 else channels[0]
        _, lane = sch.split(fused, factors=[None, LANES])
        sch.vectorize(lane)
    else:
        sch.unroll(rest[-1])
    if math.prod(sizes) >= MIN_PARALLEL_WORK:
        sch.parallel(sch.fuse(n, y))
