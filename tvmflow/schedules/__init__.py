"""Default schedules for kernels no tuning record covers.

An ordered rule list per device, DLight style: the first rule that applies to a kernel wins,
kernels already scheduled (by a tuning record) are skipped. TVM ships GPU rules; for CPUs it
ships only GEMV and reduction rules, so tvmflow adds its own rules in this package, one per
file (`cpu_*.py`): register-tiled pointwise / general / depthwise conv2d and matmul
micro-kernels, pooling, vectorized elementwise kernels, and a parallelizing fallback, all sized
from the target's vector width.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm import s_tir
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
    from tvmflow.schedules.cpu_axis_norm import AxisNorm
    from tvmflow.schedules.cpu_bf16 import Bf16Gemm, Bf16PointwiseConv2d, has_bf16
    from tvmflow.schedules.cpu_broadcast_reduction import BroadcastReduction
    from tvmflow.schedules.cpu_conv2d import Conv2d
    from tvmflow.schedules.cpu_depthwise_conv2d import DepthwiseConv2d
    from tvmflow.schedules.cpu_depthwise_conv2d_rows import DepthwiseConv2dRows
    from tvmflow.schedules.cpu_elementwise import Elementwise
    from tvmflow.schedules.cpu_fallback import Fallback
    from tvmflow.schedules.cpu_full_reduction import FullReduction
    from tvmflow.schedules.cpu_int8_conv2d import Int8Conv2d
    from tvmflow.schedules.cpu_int8_depthwise_conv2d import Int8DepthwiseConv2d
    from tvmflow.schedules.cpu_int8_matmul import Int8Matmul
    from tvmflow.schedules.cpu_matmul import Matmul
    from tvmflow.schedules.cpu_plane_reduction import PlaneReduction
    from tvmflow.schedules.cpu_pointwise_conv2d import PointwiseConv2d
    from tvmflow.schedules.cpu_pool import Pool
    from tvmflow.schedules.cpu_row_norm import RowNorm
    from tvmflow.schedules.cpu_single_core import SingleCore, single_core
    from tvmflow.schedules.cpu_squeeze_excite import SqueezeExcite
    from tvmflow.schedules.cpu_transpose import Transpose
    from tvmflow.schedules.cpu_winograd import WinogradDataPack, WinogradGemm, WinogradInverse

    # bf16 kernels (`--precision bf16`) exist only where the target has AVX512_BF16
    bf16 = [Bf16PointwiseConv2d(), Bf16Gemm()] if has_bf16(target) else []
    rules = [
        *bf16,
        # the three kernels of a Winograd conv (tvmflow.winograd), claimed by block name
        WinogradGemm(),
        WinogradDataPack(),
        WinogradInverse(),
        Int8Conv2d(),  # only tvmflow.qdq's int8 conv kernels
        Int8DepthwiseConv2d(),
        PointwiseConv2d(),
        Conv2d(),
        DepthwiseConv2dRows(),
        DepthwiseConv2d(),
        Int8Matmul(),
        SqueezeExcite(),
        Matmul(),
        Pool(),
        PlaneReduction(),
        RowNorm(),
        # attn: softmax / norms over a non-innermost axis (YOLOv8's DFL softmax)
        AxisNorm(),
        # reduce: reductions broadcast over a larger output (GRN), before dlight's Reduction
        BroadcastReduction(),
        # dlight.cpu.GEMV is left out: on 1x1 convs over 1x1 maps (squeeze-excite blocks) its
        # schedule made LLVM codegen take minutes (PP-OCRv4 det: >200 s vs 7 s without it).
        dlight.cpu.Reduction(),
        FullReduction(),
        Transpose(),
        Elementwise(),
        Fallback(),
    ]
    # a one-core target's kernels run their parallel loops serially (cpu_single_core)
    return [SingleCore(rule) for rule in rules] if single_core(target) else rules


def apply_default_schedules(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Schedule every still-unscheduled kernel with the first applicable default rule.

    On CPUs every kernel a rule schedules is checked against a reference schedule
    (`tvmflow.kernel_check`); one that disagrees keeps the reference. Rules may repack
    weights (parameters bound to constants) into the layout their micro-kernel streams
    best; those repackings are split out of the kernels and folded into the embedded
    constants here, so they cost nothing at run time.
    """
    from tvm import relax
    from tvm.s_tir import dlight

    from tvmflow.kernel_check import schedule_checked

    with target:
        if "gpu" in target.keys:
            return dlight.ApplyDefaultSchedule(*default_rules(target))(mod)
        mod = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
        mod = schedule_checked(mod, target, default_rules(target))
        mod = split_prepacks(mod)
        mod = relax.transform.FoldConstant()(mod)
        return relax.transform.DeadCodeElimination()(mod)


def split_prepacks(mod: tvm.IRModule) -> tvm.IRModule:
    """`relax.transform.SplitLayoutRewritePreproc` over the kernels that hold a weight
    repacking block, the others set aside meanwhile: the pass walks every kernel and asserts
    a root shape that opaque kernels no rule schedules (TVM's scatter_elements: one opaque
    block of plain loops) lack, which crashed the whole compile."""
    import tvm
    from tvm import relax

    aside = {
        gv: func
        for gv, func in mod.functions_items()
        if isinstance(func, tvm.tirx.PrimFunc) and not has_prepack(func)
    }
    kept = {gv: func for gv, func in mod.functions_items() if gv not in aside}
    split = relax.transform.SplitLayoutRewritePreproc()(tvm.IRModule(kept, attrs=mod.attrs))
    for gv, func in aside.items():
        split[gv] = func
    return split


def has_prepack(func: tvm.tirx.PrimFunc) -> bool:
    """Whether a kernel holds a block a rule marked as a weight repacking (`PREPACK_ATTR`)."""
    import tvm_ffi
    from tvm import s_tir

    from tvmflow.schedules.cpu_common import PREPACK_ATTR

    found: list[bool] = []

    def visit(block: s_tir.stmt.SBlock) -> None:
        if PREPACK_ATTR in block.annotations:
            found.append(True)

    tvm_ffi.structural_walk(func.body, [(s_tir.stmt.SBlock, visit)], order="pre")
    return bool(found)


def kernel_rules(mod: tvm.IRModule, target: tvm.target.Target) -> dict[str, str | None]:
    """Which default rule would schedule each still-unscheduled kernel (None: no rule).

    For reports and tests: it runs the rules again, so it costs another scheduling pass.
    """
    import tvm

    rules = default_rules(target)
    found: dict[str, str | None] = {}
    with target:
        for gv, func in mod.functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc):
                continue
            if func.attrs and func.attrs.get("tirx.is_scheduled"):
                continue
            found[gv.name_hint] = next(
                (type(r).__name__ for r in rules if r.apply(func, target, False) is not None),
                None,
            )
    return found


def design_spaces(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> list[s_tir.Schedule]:
    """What tuning searches for a kernel: the design spaces of the default rule that claims it
    (its knobs as sampling instructions, the default decisions first), or none when that rule
    has no knobs (MetaSchedule's generic space then)."""
    with target:
        for rule in default_rules(target):
            if rule.apply(func, target, False) is None:
                continue
            spaces = getattr(rule, "design_spaces", None)
            return list(spaces(func, target)) if spaces else []
    return []
