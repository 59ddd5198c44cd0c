"""ONNX MaxUnpool (opset 9+) with an `output_shape` input. TVM's converter called `.tolist()`
on the constant expression (a crash), and scattered the indices into `output_shape`
directly; ONNX's indices address the shape the pooling inverts (from kernel, strides and
pads), and that result is placed at the start of each axis of the larger `output_shape`.
Here TVM's converter unpools without `output_shape`, then the result is zero-padded."""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from tvmflow.ops import Converter

Expr = Any


class MaxUnpool(OnnxOpConverter):
    @classmethod
    def _impl_v9(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        output_shape = inputs[2] if len(inputs) > 2 else None
        unpooled = onnx_frontend.MaxUnpool._impl_v9(bb, [*inputs[:2], None], attr, params)
        if output_shape is None:
            return unpooled
        value = get_constant(output_shape, params)
        if not isinstance(value, tvm.ir.GenericConst):
            raise ValueError("MaxUnpool needs a constant output_shape")
        wanted = [int(d) for d in np.asarray(value.value.numpy()).reshape(-1)]
        unpooled = bb.normalize(unpooled)
        have = [int(d) for d in unpooled.ty.shape.values]
        if any(w < h for w, h in zip(wanted, have, strict=True)):
            raise ValueError(f"MaxUnpool output_shape {wanted} is smaller than {have}")
        if wanted == have:
            return unpooled
        pads = [p for w, h in zip(wanted, have, strict=True) for p in (0, w - h)]
        return relax.op.nn.pad(unpooled, pads)


CONVERTERS = (Converter("MaxUnpool", MaxUnpool, since=9, replaces=True),)
