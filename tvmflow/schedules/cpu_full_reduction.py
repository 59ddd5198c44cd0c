"""CPU rule for reductions of a whole tensor to one value (max, min, sum of everything).

DynamicQuantizeLinear takes the min and max of its whole input on every call; scheduled as
one serial loop, each step waits for the previous one's max (a latency chain, measured at
~0.5 ns per element: 16% of a dynamically quantized encoder's time). Here the reduction is
split into ACCUMULATORS x lanes partial results (rfactor) that the inner loop updates with
full vectors, independent of each other; a final pass combines them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tvm.error import InternalError
from tvm.s_tir.dlight import ScheduleRule
from tvm.s_tir.schedule import ScheduleError

from tvmflow.schedules.cpu_common import (
    dtype_bits_of_block,
    extents,
    open_single_reduction,
    vector_lanes,
)

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir

# Independent vector accumulators: enough to cover a max/add latency of 4 cycles at two per cycle.
ACCUMULATORS = 8


class FullReduction(ScheduleRule):
    """Kernels with one reduction block that reduces every loop (a scalar result), injective
    producers (inlined into it) and scalar epilogues."""

    def apply(
        self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool
    ) -> s_tir.Schedule | None:
        opened = open_single_reduction(func, target)
        if opened is None:
            return None
        sch, infos, index = opened
        main = infos[index]
        kinds = main.dom_kind()
        iters = [it.loop_rv for it in main.iters]
        spatial = extents(sch, [lp for lp, k in zip(iters, kinds, strict=True) if k == "S"])
        loops = [lp for lp, k in zip(iters, kinds, strict=True) if k == "R"]
        sizes = extents(sch, loops)
        # spatial iters of extent 1 only (normalization adds one to a scalar result)
        if spatial is None or any(s != 1 for s in spatial) or not sizes:
            return None
        block = main.block_rv
        try:
            for info in infos[:index]:
                sch.compute_inline(info.block_rv)
            lanes = vector_lanes(target, dtype_bits_of_block(sch, block))
            total = math.prod(sizes)
            chunk = next((c for c in (lanes * ACCUMULATORS, lanes) if total % c == 0), None)
            if chunk is None or total < 4 * chunk:
                return None
            # the innermost loop alone when it divides: fused indices need div/mod per load
            last = loops[-1] if sizes[-1] % chunk == 0 else sch.fuse(*loops)
            _, inner = sch.split(last, factors=[None, chunk])
            partial = sch.rfactor(inner, 0)
            outer = sch.get_loops(partial)[0]
            acc, vec = sch.split(sch.get_loops(partial)[-1], factors=[None, lanes])
            sch.set_scope(partial, 0, "local")
            sch.unroll(acc)
            sch.vectorize(vec)
            sch.decompose_reduction(partial, outer)
        except (ScheduleError, InternalError):
            return None
        return sch
