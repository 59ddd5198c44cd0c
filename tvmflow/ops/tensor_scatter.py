"""ONNX TensorScatter (opset 24): write an update into a KV cache at per-batch positions.

Update step s of batch b lands at write_indices[b] + s along `axis` (modulo the cache length
in `circular` mode; zeros when write_indices is absent). Written as a gather, not a scatter:
each cache position reads the update step that lands on it, or keeps its value, so the
kernel is an ordinary elementwise block that schedules like any other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.common import optional, shape, text

Expr = Any


class TensorScatter(OnnxOpConverter):
    @classmethod
    def _impl_v24(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        cache, update = inputs[0], inputs[1]
        write = optional(inputs, 2)
        mode = text(attr.get("mode", "linear"))
        if mode not in ("linear", "circular"):
            raise ValueError(f"TensorScatter: mode {mode!r} is not 'linear' or 'circular'")
        dims, steps = shape(cache), shape(update)
        axis = int(attr.get("axis", -2)) % len(dims)
        length = dims[axis]
        layout = [1] * len(dims)
        layout[axis] = length
        source = relax.const(np.arange(length).reshape(layout).astype("int64"), "int64")
        if write is not None:  # cache position p holds update step p - write_indices[b]
            layout = [1] * len(dims)
            layout[0] = dims[0]
            source = op.subtract(source, op.reshape(op.astype(write, "int64"), layout))
        if mode == "circular":
            source = op.floor_mod(source, relax.const(length, "int64"))
        source = bb.emit(source)
        written = op.logical_and(
            op.greater_equal(source, relax.const(0, "int64")),
            op.less(source, relax.const(steps[axis], "int64")),
        )
        clamped = op.clip(source, 0, steps[axis] - 1)
        index = bb.emit(op.broadcast_to(clamped, [*dims[:axis], length, *dims[axis + 1 :]]))
        gathered = op.gather_elements(update, index, axis=axis)
        return op.where(op.broadcast_to(written, dims), gathered, cache)


CONVERTERS = (Converter("TensorScatter", TensorScatter, since=24),)
