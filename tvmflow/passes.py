"""Relax lowering shared by `tune` and `compile`.

Tuning records are keyed by the structural hash of each fused TIR function, so tuning and
compiling must run exactly the same passes before MetaSchedule sees the module: this module
is the one place that sequence lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    # Conv weights to HWIO (a constant transpose FoldConstant removes): the output channel is
    # then contiguous, so CPU rules vectorize conv2d over it like a GEMM (K = kh*kw*ic,
    # N = oc). Activations stay NCHW: no transposes in the graph. GPU rules want neither.
    cpu_only = (
        [
            relax.transform.ConvertLayout({"relax.nn.conv2d": ["NCHW", "HWIO"]}),
            relax.transform.FastMathTransform(),
        ]
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


def kernel_names(mod: tvm.IRModule) -> list[str]:
    """Names of the TIR kernels (the units tuning works on)."""
    import tvm

    return sorted(
        gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
    )
