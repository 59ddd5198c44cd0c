"""CPU rule of last resort: any kernel no other rule claims gets its outer loops parallelized.

Grouped convolutions, conv2d_transpose without a tuned schedule, gathers and the like would
otherwise run as one serial loop nest; spreading the leading spatial loops over the cores
is always valid and never slower for the sizes where it is applied.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tvm.s_tir.dlight import ScheduleRule

from tvmflow.schedules.cpu_common import MIN_PARALLEL_WORK, extents, is_cpu

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir


class Fallback(ScheduleRule):
    """Inline what can be inlined; parallelize each remaining block's leading spatial loops."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        import tvm
        from tvm import s_tir
        from tvm.s_tir.dlight.analysis import normalize_prim_func
        from tvm.s_tir.dlight.base import try_inline

        if not isinstance(func, tvm.tirx.PrimFunc) or not is_cpu(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos:
            return None
        for info in try_inline(sch, infos):
            kinds = info.dom_kind()
            leading = len(kinds) - len(kinds.lstrip("S"))
            loops = sch.get_loops(info.block_rv)[:leading]
            sizes = extents(sch, loops)
            if not loops or sizes is None or math.prod(sizes) * 16 < MIN_PARALLEL_WORK:
                continue
            sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])
        return sch
