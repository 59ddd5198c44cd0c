"""Default schedules for kernels no tuning record covers.

An ordered rule list per device, DLight style: the first rule that applies to a kernel wins,
kernels already scheduled (by a tuning record) are skipped. TVM ships GPU rules; for CPUs it
ships only GEMV and reduction rules, so tvmflow adds its own rules in this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir.dlight import ScheduleRule


def default_rules(target: tvm.target.Target) -> list[ScheduleRule]:
    """The rule list for a target, most specific first."""
    from tvm.s_tir import dlight

    if "gpu" in target.keys:
        return [
            dlight.gpu.Matmul(),
            dlight.gpu.GEMV(),
            dlight.gpu.Reduction(),
            dlight.gpu.GeneralReduction(),
            dlight.gpu.Fallback(),
        ]
    # dlight.cpu.GEMV is left out: on 1x1 convs over 1x1 maps (squeeze-excite blocks) its
    # schedule made LLVM codegen take minutes (PP-OCRv4 det: >200 s vs 7 s without it).
    return [dlight.cpu.Reduction()]


def apply_default_schedules(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Schedule every still-unscheduled kernel with the first applicable default rule."""
    from tvm.s_tir import dlight

    with target:
        return dlight.ApplyDefaultSchedule(*default_rules(target))(mod)
