"""Relax lowering shared by `tune` and `compile`.

Tuning records are keyed by the structural hash of each fused TIR function, so tuning and
compiling must run exactly the same passes before MetaSchedule sees the module: this module
is the one place that sequence lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm


PRECISIONS = ("fp32", "fp16")


def fuse(mod: tvm.IRModule, target: tvm.target.Target, precision: str = "fp32") -> tvm.IRModule:
    """Legalize Relax ops to TIR and fuse them into the kernels tuning and codegen see.

    `precision="fp16"` first runs Relax's ToMixedPrecision (fp16 compute, fp32 accumulation;
    inputs and outputs stay fp32), which changes the kernels, so tuning must use it too.
    """
    import tvm
    from tvm import relax

    # On CPUs exp/erf/tanh otherwise become one libm call per element, which LLVM cannot
    # vectorize (GELU was 40% of MiniLM's kernel time); the polynomial versions vectorize.
    # Conv weights to HWIO: see `conv_weights_hwio`. GPU rules want neither.
    cpu_only = (
        [conv_weights_hwio(), relax.transform.FastMathTransform()]
        if target.kind.name == "llvm"
        else []
    )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    mixed = [relax.transform.ToMixedPrecision(out_dtype="float32")] if precision == "fp16" else []
    with target:
        return tvm.transform.Sequential(
            [
                *mixed,
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                *cpu_only,
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                relax.transform.DeadCodeElimination(),
            ]
        )(mod)


def conv_weights_hwio() -> tvm.transform.Pass:
    """Give every NCHW/OIHW conv2d its weight as HWIO (a transpose FoldConstant folds into
    the constant): the output channel is then contiguous, so CPU rules vectorize conv2d over
    it like a GEMM (K = kh*kw*ic, N = oc). Activations stay NCHW: no transposes in the graph.

    A rewrite of the conv calls alone, not TVM's ConvertLayout: that pass infers layouts
    for every op in the graph and raises on ones it cannot (a 3-D reduction after a conv:
    "Invalid SLayout"), failing compiles that have nothing to do with conv weights.
    """
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    pattern = is_op("relax.nn.conv2d")(wildcard(), wildcard())

    def rewrite(call: relax.Call, _: Any) -> relax.Expr:
        attrs = call.attrs
        if (attrs.data_layout, attrs.kernel_layout) != ("NCHW", "OIHW") or attrs.out_layout != (
            "NCHW"
        ):
            return call
        return relax.op.nn.conv2d(
            call.args[0],
            relax.op.permute_dims(call.args[1], [2, 3, 1, 0]),
            strides=attrs.strides,
            padding=attrs.padding,
            dilation=attrs.dilation,
            groups=attrs.groups,
            data_layout="NCHW",
            kernel_layout="HWIO",
            out_layout="NCHW",
            out_dtype=attrs.out_dtype,
        )

    def transform(mod: tvm.IRModule, _: Any) -> tvm.IRModule:
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod[gv] = rewrite_call(pattern, rewrite, func)
        return mod

    return tvm.transform.module_pass(transform, opt_level=0, name="ConvWeightsHWIO")


def kernel_names(mod: tvm.IRModule) -> list[str]:
    """Names of the TIR kernels (the units tuning works on)."""
    import tvm

    return sorted(
        gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
    )
