"""ONNX ReverseSequence (opset 10): reverse the first sequence_lens[b] steps of each batch row.

The lengths are a runtime input: each output step t of row b reads step
lens[b] - 1 - t when t < lens[b] and t otherwise, one gather along the time axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.common import shape

Expr = Any


class ReverseSequence(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        x, lens = inputs[0], inputs[1]
        batch_axis, time_axis = int(attr.get("batch_axis", 1)), int(attr.get("time_axis", 0))
        dims = shape(x)
        layout = [1] * len(dims)
        layout[time_axis] = dims[time_axis]
        steps = relax.const(np.arange(dims[time_axis]).reshape(layout).astype("int64"), "int64")
        layout = [1] * len(dims)
        layout[batch_axis] = dims[batch_axis]
        lens = bb.emit(op.reshape(op.astype(lens, "int64"), layout))
        reversed_step = op.subtract(op.subtract(lens, relax.const(1, "int64")), steps)
        index = op.where(op.less(steps, lens), reversed_step, steps)
        index = bb.emit(op.broadcast_to(index, dims))
        return op.gather_elements(x, index, axis=time_axis)


CONVERTERS = (Converter("ReverseSequence", ReverseSequence, since=10),)
