"""ONNX Pow (opset 7+) with mixed and integer types.

TVM's converter calls `relax.op.power` on the operands as given: a float base with an
integer exponent (or the reverse) fails to import ("Binary operators must have the same
datatype") and an integer base with an integer exponent fails to build ("power only
applies to float"). ONNX's output has the base's type. Here a float base takes the exponent
cast to its type; an integer base computes in float64 (exact up to 2**53: square-and-multiply
over the exponent's bits would be exact, but the elementwise rule inlines its chain of
squares into an expression of 2**bits terms).
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def _float64_power(base: Expr, exponent: Expr, dtype: str) -> Expr:
    """base ** exponent computed in float64, as `dtype`. For integer exponents the float64
    result is rounded (exact while it fits in 53 bits; a negative exponent truncates, 1 / x
    -> 0, like integer division); for float exponents truncated, as numpy's cast does."""
    op = relax.op
    wide = op.power(op.astype(base, "float64"), op.astype(exponent, "float64"))
    if _is_float(str(exponent.ty.dtype)):
        return op.astype(op.trunc(wide), dtype)
    negative = op.less(exponent, relax.const(0, str(exponent.ty.dtype)))
    return op.astype(op.where(negative, op.trunc(wide), op.round(wide)), dtype)


class Pow(OnnxOpConverter):
    @classmethod
    def _impl_v7(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        base, exponent = inputs
        if not all(isinstance(getattr(x, "ty", None), relax.TensorType) for x in inputs):
            return onnx_frontend.Pow._impl_v7(bb, inputs, attr, params)
        dtype, e_dtype = str(base.ty.dtype), str(exponent.ty.dtype)
        if _is_float(dtype):
            if e_dtype != dtype:
                exponent = relax.op.astype(exponent, dtype)
            return relax.op.power(base, exponent)
        return _float64_power(base, exponent, dtype)


CONVERTERS = (Converter("Pow", Pow, since=7, replaces=True),)
