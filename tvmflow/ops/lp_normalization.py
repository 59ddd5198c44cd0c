"""ONNX LpNormalization (opsets 1-22): x / ||x||_p along `axis` (p 1 or 2; zero norm → 0)."""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


class LpNormalization(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        x = inputs[0]
        axis = int(attr.get("axis", -1))
        p = int(attr.get("p", 2))
        if p not in (1, 2):
            raise ValueError(f"LpNormalization supports p 1 and 2, not {p}")
        if p == 1:
            norm = op.sum(op.abs(x), [axis], keepdims=True)
        else:
            norm = op.sqrt(op.sum(op.multiply(x, x), [axis], keepdims=True))
        norm = bb.emit(norm)
        zero = relax.const(0, str(x.ty.dtype))
        return op.where(op.equal(norm, zero), zero, op.divide(x, norm))


CONVERTERS = (Converter("LpNormalization", LpNormalization, since=1),)
