"""CPU rule for the int8 depthwise convolutions of QDQ models (`tvmflow.qdq`'s `qdwconv2d`
kernels): int32 multiply-adds vectorized over 16 channels.

The kernel's blocks come from `tvmflow.qdq.depthwise_compute`: the pack (activation padded
with its zero point, channels last), the i32 multiply-adds with the weight as int32 [KH,
KW, C], the requantize into NHWC. Depthwise has no reduction over channels for a dot
product to sum, so no VNNI here: a register tile of `cols` output columns x `vecs` 16-lane
channel vectors (bytes widened to i32 on load, one vpmulld + vpaddd per tap), the taps
unrolled, the tile requantized from the registers and stored contiguously.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tvmflow.schedules.cpu_common import MIN_PARALLEL_WORK, extents
from tvmflow.schedules.cpu_int8_conv2d import (
    QdqKernelRule,
    register_tile,
    requantize_tile,
    schedule_pack,
)
from tvmflow.schedules.cpu_int8_matmul import LANES

if TYPE_CHECKING:
    from tvm import s_tir


class Int8DepthwiseConv2d(QdqKernelRule):
    """`qdwconv2d` kernels (pack, i32 depthwise multiply-adds, requantize) on the targets
    `tvmflow.qdq` makes them for (AVX512-VNNI)."""

    def __init__(self) -> None:
        from tvmflow.qdq import DW_BLOCK, DW_PACK_BLOCK, REQUANT_BLOCK

        self.blocks = (DW_PACK_BLOCK, DW_BLOCK, REQUANT_BLOCK)

    def _schedule(self, sch: s_tir.Schedule, pack: Any, conv: Any, requant: Any, nhwc: bool) -> Any:
        loops = sch.get_loops(conv)
        sizes = extents(sch, loops)
        if sizes is None or len(loops) != 6 or sizes[3] % LANES:
            return None
        schedule_pack(sch, pack, nhwc)
        cols, vecs = register_tile(sizes[2], sizes[3] // LANES)
        acc = sch.cache_write(conv, 0, "local")
        n, y, x, c, ry, rx = sch.get_loops(conv)
        c_out, c_vec, c_lane = sch.split(c, factors=[None, vecs, LANES])
        x_out, x_in = sch.split(x, factors=[None, cols])
        sch.reorder(n, y, c_out, x_out, ry, rx, x_in, c_vec, c_lane)
        sch.reverse_compute_at(acc, x_out, preserve_unit_loops=True)
        outer = sch.fuse(n, y)
        if math.prod(sizes[:4]) >= MIN_PARALLEL_WORK:
            sch.parallel(outer)
        sch.vectorize(c_lane)  # before the init is split off: then it is a reduction block
        init = sch.decompose_reduction(conv, ry)
        sch.vectorize(sch.get_loops(init)[-1])
        for loop in (ry, rx, x_in, c_vec):
            sch.unroll(loop)
        requantize_tile(sch, requant, acc, x_out)
        return sch
