"""CPU rule for injective kernels: elementwise chains, broadcasts, transposes, pads, concats.

Everything that can be inlined is inlined into its consumer; each remaining block gets its
innermost loops fused and vectorized at the target's width and its outer loops fused and
parallelized. Memory-bound work: the goal is one pass over memory with full vectors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tvmflow.schedules.cpu_common import (
    compute_bits_of_block,
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
        if not all(info.is_injective() for info in infos):
            return None
        for info in try_inline(sch, infos):
            block = info.block_rv
            schedule_spatial(sch, block, vector_lanes(target, compute_bits_of_block(sch, block)))
        return sch
