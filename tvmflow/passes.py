"""Relax lowering shared by `tune` and `compile`.

Tuning records are keyed by the structural hash of each fused TIR function, so tuning and
compiling must run exactly the same passes before MetaSchedule sees the module: this module
is the one place that sequence lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm


def fuse(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalize Relax ops to TIR and fuse them into the kernels tuning and codegen see."""
    import tvm
    from tvm import relax

    # On CPUs exp/erf/tanh otherwise become one libm call per element, which LLVM cannot
    # vectorize (GELU was 40% of MiniLM's kernel time); the polynomial versions vectorize.
    fast_math = [relax.transform.FastMathTransform()] if target.kind.name == "llvm" else []
    with target:
        return tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                # Weights to HWIO (a constant transpose FoldConstant removes): the output
                # channel is then contiguous, so CPU rules vectorize conv2d over it like a GEMM
                # (K = kh*kw*ic, N = oc). Activations stay NCHW: no transposes in the graph.
                relax.transform.ConvertLayout({"relax.nn.conv2d": ["NCHW", "HWIO"]}),
                *fast_math,
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
