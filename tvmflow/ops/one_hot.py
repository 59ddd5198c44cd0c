"""ONNX OneHot (opset 9+) with run-time `values` (TVM's needs them constant), negative
indices (counted from `depth`) and any `axis`. `depth` must be a constant."""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from tvmflow.ops import Converter

Expr = Any


class OneHot(OnnxOpConverter):
    @classmethod
    def _impl_v9(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        indices, depth_expr, values = inputs
        depth_value = get_constant(depth_expr, params)
        if not isinstance(depth_value, tvm.ir.GenericConst):
            raise ValueError("OneHot needs a constant depth")
        depth = int(np.asarray(depth_value.value.numpy()).reshape(-1)[0])
        rank = len(indices.ty.shape.values)
        axis = int(attr.get("axis", -1)) % (rank + 1)
        idx = op.astype(indices, "int64")  # float indices count too (truncated)
        depth_c = relax.const(depth, "int64")
        idx = op.where(op.less(idx, relax.const(0, "int64")), op.add(idx, depth_c), idx)
        positions = np.arange(depth, dtype=np.int64).reshape([depth] + [1] * (rank - axis))
        hot = op.equal(op.expand_dims(idx, axis), relax.const(positions, "int64"))
        flat = op.reshape(values, [2])
        off = op.take(flat, relax.const(0, "int64"), axis=0)
        on = op.take(flat, relax.const(1, "int64"), axis=0)
        return op.where(hot, on, off)


CONVERTERS = (Converter("OneHot", OneHot, since=9, replaces=True),)
