"""ONNX RMSNormalization (opset 23) over every axis of its input (`axis` 0 or -rank).

TVM's converter calls `relax.op.nn.rms_norm`, whose TOPI kernel fails to build when the axes
cover the whole tensor ("Tensor dimension mismatch in read ndim = 1, indices.size=0"): the
input gets a leading unit dim there, so the axes never cover it all. Other axes go to TVM's.
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


class RMSNormalization(OnnxOpConverter):
    @classmethod
    def _impl_v23(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        data = inputs[0]
        ndim = len(data.ty.shape.values)
        if int(attr.get("axis", -1)) % ndim != 0:
            return onnx_frontend.RMSNormalization._impl_v23(bb, inputs, attr, params)
        shape = data.ty.shape
        lifted = bb.normalize(relax.op.expand_dims(data, 0))
        out = onnx_frontend.RMSNormalization._impl_v23(
            bb, [lifted, *inputs[1:]], {**attr, "axis": 1}, params
        )
        return relax.op.reshape(out, shape)


CONVERTERS = (Converter("RMSNormalization", RMSNormalization, since=23, replaces=True),)
