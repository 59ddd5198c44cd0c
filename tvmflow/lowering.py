"""Lowering: ONNX model → Relax → fused kernels → tuning records → default rules → build.

Tuning records are keyed by the structural hash of each fused TIR function, so `tune` must
extract its tasks from exactly the module `compile` builds. This module is the one place that
sequence lives, in stages: `fuse` (Relax passes down to fused TIR kernels), then `schedule`
(tuning records where they improve a kernel, tvmflow's default rules for the rest), then
`build`. `compile` calls `lower` + `build`, `tune` calls `tuning_tasks` and `default_schedule`
(its baseline), scripts/profile-kernels calls `lower`. One frozen `LoweringOptions` drives it.
Last, `lift_weights` turns the (folded, prepacked) constants into arguments of `main`, so they
ship in the artifact's weights file instead of inside the library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvmflow.errors import TvmflowError
from tvmflow.manifest import DYNAMIC, TensorSpec, TuningInfo
from tvmflow.targets import Preset
from tvmflow.tunelog import (
    apply_records,
    check_log_dir,
    log_matches_target,
    log_target,
    shipped_log_dirs,
)

if TYPE_CHECKING:
    import numpy as np
    import tvm
    from tvm import relax

    from tvmflow.frontend import ImportedModel

PRECISIONS = ("fp32", "fp16", "bf16")
BF16_FEATURE = "avx512_bf16"  # the CPU flag (/proc/cpuinfo) of vdpbf16ps
BF16_PRESET = "x86-avx512-bf16"


@dataclass(frozen=True)
class LoweringOptions:
    """What decides the kernels and their schedules (the target comes with the preset).

    `precision="fp16"` (CUDA presets only) computes in fp16 with fp32 accumulation;
    `"bf16"` (CPU presets with AVX512_BF16) runs conv2d / matmul in bf16 with fp32
    accumulation (`tvmflow.bf16`). Inputs and outputs stay fp32. It changes the kernels, so
    tune and compile must agree on it.
    """

    precision: str = "fp32"
    tuning_logs: tuple[Path, ...] = ()
    use_shipped_logs: bool = True


@dataclass(frozen=True)
class Lowered:
    """A model lowered for one target: every kernel scheduled, ready for `build`."""

    mod: tvm.IRModule
    weights: tuple[np.ndarray, ...]  # main's arguments after the model inputs, in order
    outputs: tuple[TensorSpec, ...]
    tuning: TuningInfo


def check_precision(preset: Preset, precision: str) -> None:
    """The one check of which precisions a preset accepts (compile and tune both ask it):
    fp16 on CUDA presets, bf16 on CPU presets whose features include AVX512_BF16."""
    if precision not in PRECISIONS:
        raise TvmflowError(
            f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}"
        )
    if precision == "fp16" and preset.device != "cuda":
        raise TvmflowError(
            f"--precision fp16 is for CUDA targets; {preset.name} is a {preset.device} "
            "target, where fp16 arithmetic is emulated and slower: use --precision fp32 "
            f"(or bf16 with --target {BF16_PRESET} on CPUs with AVX512_BF16)"
        )
    if precision == "bf16" and (preset.device != "cpu" or BF16_FEATURE not in preset.cpu_features):
        raise TvmflowError(
            f"--precision bf16 needs a CPU preset with {BF16_FEATURE} (bf16 dot products); "
            f"{preset.name} has none: use --target {BF16_PRESET} (or --precision fp32)"
        )


def lower(model: ImportedModel, preset: Preset, options: LoweringOptions) -> Lowered:
    """The whole sequence up to (not including) code generation."""
    import tvm

    from tvmflow.frontend import to_relax

    check_precision(preset, options.precision)
    target = tvm.target.Target(preset.target)
    with target:  # converters that size kernels for it read it (tvmflow.ops.recurrent_kernel)
        mod = to_relax(model)
    outputs = output_specs(mod, model)
    mod = fuse(mod, target, options.precision)
    mod, tuning = schedule(mod, target, log_dirs(preset, options))
    mod, weights = lift_weights(mod)
    return Lowered(mod, weights, outputs, tuning)


def fused_module(model: ImportedModel, target: tvm.target.Target, precision: str) -> tvm.IRModule:
    """The model's fused, still unscheduled kernels: what tuning searches."""
    from tvmflow.frontend import to_relax

    with target:  # as `lower` imports it
        mod = to_relax(model)
    return fuse(mod, target, precision)


def fuse(mod: tvm.IRModule, target: tvm.target.Target, precision: str = "fp32") -> tvm.IRModule:
    """Legalize Relax ops to TIR and fuse them into the kernels tuning and codegen see.

    `precision="fp16"` first runs Relax's ToMixedPrecision (fp16 compute, fp32 accumulation;
    inputs and outputs stay fp32), `"bf16"` tvmflow's `Bf16Compute` (conv2d / matmul in
    bf16); both change the kernels, so tuning must use them too.
    """
    import tvm
    from tvm import relax

    # On CPUs exp/erf/tanh otherwise become one libm call per element, which LLVM cannot
    # vectorize (GELU was 40% of MiniLM's kernel time); the polynomial versions vectorize.
    # Conv weights to HWIO: see `conv_weights_hwio`. GPU rules want neither.
    # Upsampling conv2d_transposes (kernel == stride) become a 1x1 conv + pixel shuffle
    # first: no multiply-adds by the zeros Relax's legalization dilates the input with.
    # conv1d becomes a height-1 conv2d, which the conv2d rules schedule as a GEMM; conv2ds
    # get output channels and columns the register tile divides (padded, then sliced off).
    from tvmflow.bf16 import Bf16Compute
    from tvmflow.branch_sink import LiftBranches, SinkIntoBranches
    from tvmflow.conv1d import Conv1dAsConv2d
    from tvmflow.conv_branches import ParallelConvBranches
    from tvmflow.conv_dead_taps import DropDeadConvTaps
    from tvmflow.conv_phases import DilatedConvAsPhases
    from tvmflow.conv_tap_regions import ConvAsTapRegions
    from tvmflow.conv_tiles import PadConvForTiles
    from tvmflow.depthwise_scale import DepthwiseScaleAsMultiply
    from tvmflow.einsum_matmul import EinsumAsMatmul
    from tvmflow.fast_pow import PowerAsMultiply
    from tvmflow.fast_sigmoid import SigmoidAsTanh
    from tvmflow.fp16_accumulate import Fp16Accumulate
    from tvmflow.matmul_reshape import MatmulReshape
    from tvmflow.ops.non_zero import NonZeroAsKernel
    from tvmflow.ops.recurrent_kernel import on_one_gpu_thread
    from tvmflow.qdq import QdqToInteger
    from tvmflow.resize_matmul import ResizeAsMatmul
    from tvmflow.schedules.cpu_common import vector_lanes
    from tvmflow.schedules.cpu_int8_matmul import has_vnni
    from tvmflow.upsample_conv import SplitUpsamplingConvTranspose
    from tvmflow.winograd import BF16_SIZES, WinogradConv2d

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    # bf16: after the Winograd rewrite (F(4,3) beats the bf16 kernel, F(2,3) does not) and
    # the rewrites that make convs of other ops, before the passes that pad / relayout convs
    bf16 = precision == "bf16"
    cpu_only = (
        [
            SplitUpsamplingConvTranspose(),
            Conv1dAsConv2d(),
            ParallelConvBranches(),  # conv + conv over one input (unfused MobileOne branches)
            DepthwiseScaleAsMultiply(),  # 1x1 depthwise convs (MobileOne scale branches)
            DropDeadConvTaps(),  # dilated taps reading only padding (ASPP on small maps)
            ConvAsTapRegions(),  # dilated convs mostly over padding: per-tap 1x1 convs
            DilatedConvAsPhases(),  # stride-1 dilated convs as undilated ones, where no waste
            # 3x3 stride-1 convs, where faster
            WinogradConv2d(vector_lanes(target), *([BF16_SIZES] if bf16 else [])),
            *([Bf16Compute()] if bf16 else []),
            PadConvForTiles(vector_lanes(target)),
            conv_weights_hwio(),
            MatmulReshape(),  # a Linear's output reshape moves to its input: GELU fuses
            SigmoidAsTanh(),  # before FastMathTransform, which makes the tanh fast
            PowerAsMultiply(),  # x ** 3 (tanh GELU) as multiplies, not a powf per element
            ResizeAsMatmul(),  # bilinear resizes of small maps as two matmuls, not gathers
            relax.transform.FastMathTransform(),
            # reduce
            EinsumAsMatmul(),  # two-operand einsums that are matrix products: matmul rules
        ]
        if target.kind.name == "llvm"
        else [on_one_gpu_thread()]  # recurrent kernels are CPU code (tvmflow.ops.recurrent_kernel)
    )
    # QDQ chains as int8 kernels where VNNI dot products run them (tvmflow.qdq)
    integer = [QdqToInteger()] if target.kind.name == "llvm" and has_vnni(target) else []
    mixed = [relax.transform.ToMixedPrecision(out_dtype="float32")] if precision == "fp16" else []
    with target:
        return tvm.transform.Sequential(
            [
                SinkIntoBranches(),  # an If's branches compute their own work, not both
                # a function with control flow (an ONNX If) is one plain binding block:
                # FuseOps only fuses inside dataflow blocks, so its straight-line runs get
                # theirs back (else every op is its own kernel, one VM call each)
                relax.transform.ConvertToDataflow(),
                # TVM runs relax.nonzero as a function of its compiler library only
                NonZeroAsKernel(),
                # an fp16 export's matmuls / convs sum in fp32 (on CPUs, fp32 weights too)
                Fp16Accumulate(widen_weights=target.kind.name == "llvm"),
                *integer,
                *mixed,
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                *cpu_only,
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                scalar_kernels_opaque(),
                relax.transform.FoldConstant(),
                LiftBranches(),  # FuseOps does not look inside an If's branches
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                relax.transform.DeadCodeElimination(),
            ]
        )(mod)


def scalar_kernels_opaque() -> tvm.transform.Pass:
    """Kernels that take a scalar parameter (a data-dependent size: `shape_to_tensor` of a
    NonZero count, a slice to a run-time length) stay unfused: FuseTIR, merging one with a
    kernel whose buffers are sized by the same variable, defined it twice and failed
    ("VarRemapGet(source) == nullptr"). They are tiny."""
    import tvm

    opaque = 8  # OpPatternKind::kOpaque

    def run(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod
        for gv, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc) and any(
                not hasattr(p, "shape") for p in func.params
            ):
                if out is mod:
                    out = mod.clone()
                out[gv] = func.with_attr("op_pattern", opaque)
        return out

    return tvm.transform.module_pass(run, opt_level=0, name="ScalarKernelsOpaque")


def conv_weights_hwio() -> tvm.transform.Pass:
    """Give every NCHW/OIHW conv2d its weight as HWIO (a transpose FoldConstant folds into
    the constant): the output channel is then contiguous, so CPU rules vectorize conv2d over
    it like a GEMM (K = kh*kw*ic, N = oc). Activations stay NCHW: no transposes in the graph.

    A rewrite of the conv calls alone, not TVM's ConvertLayout: that pass infers layouts
    for every op in the graph and raises on ones it cannot (a 3-D reduction after a conv:
    "Invalid SLayout"), failing compiles that have nothing to do with conv weights.
    """
    from tvm import relax

    from tvmflow.call_rewrite import call_rewrite_pass

    def rewrite(call: relax.Call) -> relax.Expr:
        attrs = call.attrs
        if (attrs.data_layout, attrs.kernel_layout) != ("NCHW", "OIHW") or attrs.out_layout != (
            "NCHW"
        ):
            return call
        return relax.op.nn.conv2d(
            call.args[0],
            _hwio(call.args[1]),
            strides=attrs.strides,
            padding=attrs.padding,
            dilation=attrs.dilation,
            groups=attrs.groups,
            data_layout="NCHW",
            kernel_layout="HWIO",
            out_layout="NCHW",
            out_dtype=attrs.out_dtype,
        )

    return call_rewrite_pass("ConvWeightsHWIO", [("relax.nn.conv2d", 2)], rewrite)


def _hwio(weight: relax.Expr) -> relax.Expr:
    """An OIHW weight as HWIO: a constant is transposed here, in numpy. Left to FoldConstant,
    each weight shape was a kernel JIT-compiled to transpose it (DenseNet-121: 120 convs,
    most of its FoldConstant time)."""
    import numpy as np
    import tvm
    from tvm import relax

    if isinstance(weight, tvm.ir.expr.Constant):
        return relax.const(np.ascontiguousarray(weight.value.numpy().transpose(2, 3, 1, 0)))
    return relax.op.permute_dims(weight, [2, 3, 1, 0])


def schedule(
    mod: tvm.IRModule, target: tvm.target.Target, logs: list[Path]
) -> tuple[tvm.IRModule, TuningInfo]:
    """Records first (where they beat the default), then the default rules for the rest;
    every kernel either schedules is checked against a reference (`tvmflow.kernel_check`)."""
    from dataclasses import replace

    from tvmflow.kernel_check import check_tuned
    from tvmflow.schedules import apply_default_schedules

    tuned, tuning = apply_records(mod, target, logs)
    tuned, dropped = check_tuned(mod, tuned, target)
    tuning = replace(tuning, tasks_tuned=tuning.tasks_tuned - dropped)
    return apply_default_schedules(tuned, target), tuning


def lift_weights(mod: tvm.IRModule) -> tuple[tvm.IRModule, tuple[np.ndarray, ...]]:
    """Replace every constant of `main` by a parameter appended after the model's inputs;
    returns the new module and the constants' values in parameter order.

    Runs after scheduling, so the weights are already folded and repacked into the layouts
    the kernels read (compile-time transforms still cost nothing at run time). Constants
    embedded in the library would be held twice once TVM loads it (the mapped file and a
    heap copy); as arguments they are held once, mapped from the weights file. Identical
    constants (same dtype, shape and bytes) become one argument; sub-byte constants (int4,
    float4), whose numpy form is not TVM's packed one, stay in the library. A Relax function
    `main` only calls (an If's branch, `tvmflow.branch_sink`) gets its constants as
    parameters too, which `main` passes on from its own.
    """
    import hashlib

    import tvm
    from tvm import relax

    params: list[relax.Var] = []  # main's new parameters
    values: list[np.ndarray] = []
    by_content: dict[tuple[str, tuple[int, ...], bytes], relax.Var] = {}

    def main_param(const: Any) -> relax.Var:
        value = const.value.numpy()
        digest = hashlib.sha256(value.tobytes()).digest()
        key = (value.dtype.str, value.shape, digest)
        if key not in by_content:
            by_content[key] = relax.Var(f"weight{len(params)}", const.ty)
            params.append(by_content[key])
            values.append(value)
        return by_content[key]

    @relax.expr_functor.mutator
    class Lift(relax.PyExprMutator):  # type: ignore[misc]
        """Constants to parameters: main's own, or (`local`) a callee's, each standing for
        one of main's."""

        def __init__(self, mod: tvm.IRModule, local: bool) -> None:
            super().__init__(mod)
            self.local = local
            self.passed: dict[relax.Var, relax.Var] = {}  # main's param -> this callee's

        def visit_generic_const_(self, const: Any) -> relax.Expr:
            if tvm.DataType(str(const.value.dtype)).bits < 8:
                return const  # sub-byte (int4, float4): numpy holds them unpacked; stays inside
            outer = main_param(const)
            if not self.local:
                return outer
            if outer not in self.passed:
                self.passed[outer] = relax.Var(f"w{len(self.passed)}", const.ty)
            return self.passed[outer]

    main_gv = mod.get_global_var("main")
    out = mod.clone()
    # old callee -> (its new GlobalVar, main's params it also takes, in order)
    extra: dict[Any, tuple[Any, list[relax.Var]]] = {}
    for gv in _callees_of_main_only(mod):
        func = mod[gv]
        lift = Lift(mod, local=True)
        body = lift.visit_expr(func.body)
        if lift.passed:
            new_params = [*func.params, *lift.passed.values()]
            new = relax.Function(new_params, body, func.ret_ty, func.is_pure, func.attrs)
            del out[gv]  # a new GlobalVar: the old one's type is the old signature
            builder = relax.BlockBuilder(out)
            extra[gv] = (builder.add_func(new, gv.name_hint), list(lift.passed))
            out = builder.get()

    @relax.expr_functor.mutator
    class PassOn(relax.PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = super().visit_call_(call)
            if call.op not in extra:
                return call
            callee, weights = extra[call.op]
            return relax.Call(callee, [*call.args, *weights], call.attrs)

    main = mod["main"]
    body = PassOn(mod).visit_expr(Lift(mod, local=False).visit_expr(main.body))
    attrs = {**dict(main.attrs or {}), "num_input": len(main.params)}
    lifted = relax.Function(
        [*main.params, *params], body, main.ret_ty, main.is_pure, tvm.ir.DictAttrs(attrs)
    )
    out[main_gv] = lifted
    if extra:  # the extended calls have no type yet
        out = relax.transform.Normalize()(out)
    return out, tuple(values)


def _callees_of_main_only(mod: tvm.IRModule) -> list[Any]:
    """Relax functions that only `main` refers to, and only as the callee of a call."""
    from tvm import relax

    main_gv = mod.get_global_var("main")
    elsewhere = {
        g
        for gv, func in mod.functions_items()
        if isinstance(func, relax.Function) and gv != main_gv
        for g in relax.analysis.all_global_vars(func)
    }
    seen: dict[Any, int] = {}
    called: dict[Any, int] = {}

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.GlobalVar):
            seen[expr] = seen.get(expr, 0) + 1
        elif isinstance(expr, relax.Call) and isinstance(expr.op, relax.GlobalVar):
            called[expr.op] = called.get(expr.op, 0) + 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return [
        gv
        for gv, func in mod.functions_items()
        if isinstance(func, relax.Function)
        and gv != main_gv
        and gv not in elsewhere
        and called.get(gv, 0) == seen.get(gv, 0) > 0
    ]


def build(mod: tvm.IRModule, target: tvm.target.Target) -> relax.VMExecutable:
    """Code generation of a scheduled module (the preset's codegen settings). On CPUs the
    intermediates go into one arena (`tvmflow.memory_plan`)."""
    from tvm import relax

    from tvmflow.export import codegen_scope
    from tvmflow.memory_plan import build_pipeline

    pipeline = build_pipeline() if target.kind.name == "llvm" else "default"
    with codegen_scope(target):
        return relax.build(empty_constants_allocated(mod), target=target, relax_pipeline=pipeline)


def empty_constants_allocated(mod: tvm.IRModule) -> tvm.IRModule:
    """Zero-sized constants (an empty input the backend baked, a fold to an empty tensor)
    become allocations: TVM writes them into the executable but cannot read them back
    ("Invalid DLTensor file format" when the artifact loads)."""
    from tvm import relax

    @relax.expr_functor.mutator
    class Allocate(relax.PyExprMutator):  # type: ignore[misc]
        def visit_generic_const_(self, op: Any) -> relax.Expr:
            value = op.value
            if not hasattr(value, "shape") or math.prod(value.shape):
                return op
            shape = relax.ShapeExpr([int(d) for d in value.shape])
            return relax.op.builtin.alloc_tensor(shape, str(value.dtype), 0)

    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = Allocate().visit_expr(func)
    return mod


def log_dirs(preset: Preset, options: LoweringOptions) -> list[Path]:
    """The user's logs first, then the logs shipped for this preset (records for another
    target would generate code this target may not run: a user's is refused, a shipped one
    skipped)."""
    dirs = [check_log_dir(Path(d)) for d in options.tuning_logs]
    for d in dirs:
        if not log_matches_target(d, preset.target):
            raise TvmflowError(
                f"tuning log {d} was tuned for target {log_target(d)}, not {preset.name} "
                f"{preset.target}; tune for this target or drop --tuning-log {d}"
            )
    if options.use_shipped_logs:
        dirs += [
            d
            for d in shipped_log_dirs(preset.name, preset.target)
            if d not in dirs and log_matches_target(d, preset.target)
        ]
    return dirs


@dataclass(frozen=True)
class TuningTask:
    """One kernel to tune. `workload` is the kernel as compile looks records up (the key of
    its records); `kernel` is the same function with its weights marked layout-free, as the
    default rules schedule it at compile time (they prepack weights), for baselines and
    design spaces."""

    name: str
    weight: int  # calls per inference
    workload: tvm.IRModule
    kernel: tvm.IRModule


def tuning_tasks(
    model: ImportedModel, target: tvm.target.Target, precision: str
) -> list[TuningTask]:
    """The kernels compile will build (same lowering), sorted by name."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    mod = fused_module(model, target, precision)
    free = _layout_free_buffers(mod, target)
    tasks = []
    for t in ms.relax_integration.extract_tasks(mod, target):
        workload = t.dispatched[0]
        main = workload["main"]
        scheduled = [m.attrs for m in (t.mod, main) if m.attrs]
        if any(a.get("tirx.is_scheduled") for a in scheduled):
            continue  # written scheduled (the recurrent kernels): nothing to search
        attr = free.get(_key(workload["main"]))
        kernel = workload
        if attr is not None:
            kernel = tvm.IRModule({"main": workload["main"].with_attr("layout_free_buffers", attr)})
        tasks.append(TuningTask(str(t.task_name), int(t.weight), workload, kernel))
    return sorted(tasks, key=lambda t: t.name)


def _layout_free_buffers(mod: tvm.IRModule, target: tvm.target.Target) -> dict[int, Any]:
    """Per kernel (by structure), the parameters compile binds to constants, as
    `relax.transform.AttachAttrLayoutFreeBuffers` marks them (it renames the kernels)."""
    import tvm
    from tvm import relax

    with target:
        marked = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    return {
        _key(f.without_attr("layout_free_buffers")): f.attrs["layout_free_buffers"]
        for _, f in marked.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and f.attrs and "layout_free_buffers" in f.attrs
    }


def _key(func: tvm.tirx.PrimFunc) -> int:
    from tvm_ffi import structural_hash

    return int(structural_hash(func.without_attr("global_symbol")))


def default_schedule(kernel: tvm.IRModule, target: tvm.target.Target) -> tvm.s_tir.Schedule:
    """The schedule compile gives a kernel no record covers (first default rule that applies,
    as `schedule` does), as a traced Schedule: tune measures it as each task's baseline."""
    from tvm import s_tir

    from tvmflow.schedules import default_rules

    func = kernel["main"]
    with target:
        for rule in default_rules(target):
            space = rule.apply(func, target, False)
            if space is None:
                continue
            return space if isinstance(space, s_tir.Schedule) else space[0]
    return s_tir.Schedule(kernel)


def kernel_names(mod: tvm.IRModule) -> list[str]:
    """Names of the TIR kernels (the units tuning works on)."""
    import tvm

    return sorted(
        gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
    )


def output_specs(mod: tvm.IRModule, model: ImportedModel) -> tuple[TensorSpec, ...]:
    """Output signature from Relax's inferred types, named after the ONNX outputs."""
    import tvm
    from tvm import relax

    from tvmflow.narrow import real_dtype

    func = mod["main"]
    # The returned value's type names dims main's declared return type leaves unknown (the
    # symbolic sizes a NonZero or Unique binds inside the body).
    ret = func.body.body.ty if isinstance(func.body, relax.SeqExpr) else func.ret_ty
    infos = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    names = [o.name for o in model.proto.graph.output]
    declared = [o.type.tensor_type.elem_type for o in model.proto.graph.output]
    specs = []
    for name, elem_type, info in zip(names, declared, infos, strict=True):
        if not isinstance(info, relax.TensorType) or info.ndim < 0:
            raise TvmflowError(f"output {name!r} is not a tensor of known rank; cannot compile")
        # Inputs are static, so a symbolic output dim is one the data decides.
        dims = info.shape.values if info.shape is not None else [None] * info.ndim
        shape = tuple(int(d) if isinstance(d, tvm.tirx.IntImm) else DYNAMIC for d in dims)
        specs.append(TensorSpec(name, shape, real_dtype(str(info.dtype), elem_type)))
    return tuple(specs)
