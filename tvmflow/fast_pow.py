"""Lowering pass: x ** c for a constant small integer c as a chain of multiplies.

TVM legalizes power to `T.pow`, which LLVM lowers to one libm `powf` call per element: no
vectors. GELU's tanh form (HuggingFace `gelu_new`, GPT-2, ALBERT, T5) computes x ** 3 in the
epilogue of the FFN's first matmul, which then ran at a third of the speed of the encoder's
other matmuls (ALBERT: 83 GFLOP/s, 59% of the kernel time). x * x * x vectorizes; for integer
exponents it differs from powf by at most a rounding or two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tvm
    from tvm import relax

# x ** 2 .. x ** 4: beyond that the error of the chain grows and such exponents are rare
EXPONENTS = (2, 3, 4)


def _small_integer_exponent(call: relax.Call) -> int | None:
    """The exponent of `call` if it is one constant (any shape that broadcasts to nothing
    new) equal to one of EXPONENTS, else None."""
    import tvm

    base, exponent = call.args
    if not isinstance(exponent, tvm.ir.GenericConst):
        return None
    value = np.asarray(exponent.value.numpy())
    if value.size != 1 or int(getattr(base.ty, "ndim", -1)) < value.ndim:  # ndim -1: unknown rank
        return None
    scalar = float(value.reshape(()))
    return int(scalar) if scalar in EXPONENTS else None


def _as_multiplies(call: relax.Call) -> relax.Expr | None:
    from tvm import relax

    if not str(getattr(call.ty, "dtype", "")).startswith("float"):
        return None
    n = _small_integer_exponent(call)
    if n is None:
        return None
    x = call.args[0]
    out = x
    for _ in range(n - 1):
        out = relax.op.multiply(out, x)
    return out


def PowerAsMultiply() -> tvm.transform.Pass:
    """Module pass: rewrite every float x ** 2, 3 or 4 (see the module docstring)."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("PowerAsMultiply", [("relax.power", 2)], _as_multiplies)
