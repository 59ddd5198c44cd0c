"""CPU rule for injective kernels: elementwise chains, broadcasts, transposes, pads, concats.

Everything that can be inlined is inlined into its consumer; each remaining block gets its
innermost loops fused and vectorized at the target's width and its outer loops fused and
parallelized. Memory-bound work: the goal is one pass over memory with full vectors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tvmflow.schedules.cpu_common import (
    dtype_bits_of_block,
    open_schedule,
    schedule_spatial,
    vector_lanes,
)

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

from tvm.s_tir.dlight import ScheduleRule


class Elementwise(ScheduleRule):
    """Kernels whose blocks are all spatial (no reduction)."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        from tvm.s_tir.dlight.base import try_inline

        opened = open_schedule(func, target)
        if opened is None:
            return None
        sch, infos = opened
        if not all(info.is_injective() for info in infos) or _has_init(func):
            return None
        for info in try_inline(sch, infos):
            block = info.block_rv
            schedule_spatial(sch, block, vector_lanes(target, dtype_bits_of_block(sch, block)))
        return sch


def _has_init(func: tvm.tirx.PrimFunc) -> bool:
    """Whether a block is a reduction in TIR terms (it has an init) though every iterator is
    spatial: normalization drops reduce iterators of extent 1, so a 1x1 depthwise conv (groups =
    channels; FastViT/MobileOne's scale branch) looks injective, and scheduling it as such gave
    wrong values (the kernel check caught it)."""
    import tvm_ffi
    from tvm import s_tir

    blocks: list[s_tir.stmt.SBlock] = []
    tvm_ffi.structural_walk(func.body, [(s_tir.stmt.SBlock, blocks.append)], order="pre")
    return any(block.init is not None for block in blocks)
