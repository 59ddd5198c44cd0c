"""ONNX CumProd (opset 26): cumulative product along a constant axis, `exclusive`, `reverse`."""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from tvmflow.ops import Converter

Expr = Any


class CumProd(OnnxOpConverter):
    @classmethod
    def _impl_v26(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        axis = get_constant(inputs[1], params)
        if not isinstance(axis, tvm.ir.GenericConst):
            raise ValueError("CumProd needs a constant axis")
        x = inputs[0]
        dim = int(np.asarray(axis.value.numpy()).reshape(())) % len(x.ty.shape.values)
        reverse = bool(attr.get("reverse", 0))
        if reverse:
            x = bb.emit(relax.op.flip(x, dim))
        out = bb.emit(relax.op.cumprod(x, dim, exclusive=bool(attr.get("exclusive", 0))))
        return relax.op.flip(out, dim) if reverse else out


CONVERTERS = (Converter("CumProd", CumProd, since=26),)
