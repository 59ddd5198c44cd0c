"""Lowering pass: sigmoid(x) as 0.5 + 0.5 * tanh(x / 2), which FastMathTransform makes fast.

TVM legalizes sigmoid to `T.sigmoid`, which LLVM lowers to one libm `expf` call per element:
no vectors. SiLU / swish (x * sigmoid(x)) follows every conv of EfficientNet and MobileViT,
so its epilogue cost more than the conv (MobileViT-XS: a 1x1 conv + SiLU at 3 GFLOP/s).
FastMathTransform replaces exp, erf and tanh by vectorizable polynomial versions but not
sigmoid; in the tanh form it does (the identity is exact, and tanh saturates instead of
overflowing like exp(-x) would).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm import relax


def _as_tanh(call: relax.Call) -> relax.Expr | None:
    from tvm import relax

    dtype = str(getattr(call.ty, "dtype", ""))
    if not dtype.startswith("float"):
        return None
    half = relax.const(0.5, dtype)
    x = call.args[0]
    return relax.op.add(half, relax.op.multiply(half, relax.op.tanh(relax.op.multiply(x, half))))


def SigmoidAsTanh() -> tvm.transform.Pass:
    """Module pass: rewrite every float sigmoid (see the module docstring)."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("SigmoidAsTanh", [("relax.sigmoid", 1)], _as_tanh)
