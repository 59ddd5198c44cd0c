"""Small elementwise ONNX ops TVM 0.27's importer lacks: Celu (opset 12), Swish (opset 24)."""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


class Celu(OnnxOpConverter):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""

    @classmethod
    def _impl_v12(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        x = inputs[0]
        dtype = str(x.ty.dtype)
        alpha = relax.const(float(attr.get("alpha", 1.0)), dtype)
        zero, one = relax.const(0.0, dtype), relax.const(1.0, dtype)
        negative = op.multiply(alpha, op.subtract(op.exp(op.divide(x, alpha)), one))
        return op.add(op.maximum(x, zero), op.minimum(negative, zero))


class Swish(OnnxOpConverter):
    """x * sigmoid(alpha * x)."""

    @classmethod
    def _impl_v24(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        x = inputs[0]
        alpha = relax.const(float(attr.get("alpha", 1.0)), str(x.ty.dtype))
        return relax.op.multiply(x, relax.op.sigmoid(relax.op.multiply(alpha, x)))


CONVERTERS = (Converter("Celu", Celu, since=12), Converter("Swish", Swish, since=24))
