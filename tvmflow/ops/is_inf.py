"""ONNX IsInf (opset 10+) with `detect_positive` / `detect_negative`, which TVM's ignores."""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


class IsInf(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        x = inputs[0]
        positive = bool(attr.get("detect_positive", 1))
        negative = bool(attr.get("detect_negative", 1))
        inf = op.isinf(x)
        zero = relax.const(0, str(x.ty.dtype))
        if positive and negative:
            return inf
        if positive:
            return op.logical_and(inf, op.greater(x, zero))
        if negative:
            return op.logical_and(inf, op.less(x, zero))
        return op.zeros(x.ty.shape, "bool")


CONVERTERS = (Converter("IsInf", IsInf, since=10, replaces=True),)
