"""ONNX BatchNormalization (opset 14+) with `training_mode=1`: normalize with the batch's own
statistics and also return the updated running mean and variance (TVM's converter ignores
the attribute and normalizes with the running ones)."""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


class BatchNormalization(OnnxOpConverter):
    @classmethod
    def _impl_v14(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        if not attr.get("training_mode", 0):
            return onnx_frontend.BatchNormalization._impl_v15(bb, inputs, attr, params)
        op = relax.op
        x, scale, bias, mean, var = inputs
        rank = len(x.ty.shape.values)
        dtype = str(x.ty.dtype)
        axes = [a for a in range(rank) if a != 1]
        channel = [-1] + [1] * (rank - 2)  # broadcast a [C] vector over N, C, D1...

        def per_channel(v: Expr) -> Expr:
            return op.reshape(v, channel)

        batch_mean = bb.emit(op.mean(x, axes))
        centered = bb.emit(op.subtract(x, per_channel(batch_mean)))
        batch_var = bb.emit(op.mean(op.multiply(centered, centered), axes))
        eps = relax.const(float(attr.get("epsilon", 1e-5)), dtype)
        inv_std = op.rsqrt(op.add(per_channel(batch_var), eps))
        y = op.add(
            op.multiply(op.multiply(centered, inv_std), per_channel(scale)), per_channel(bias)
        )
        momentum = float(attr.get("momentum", 0.9))
        keep, take = relax.const(momentum, dtype), relax.const(1.0 - momentum, dtype)
        running_mean = op.add(op.multiply(mean, keep), op.multiply(batch_mean, take))
        running_var = op.add(op.multiply(var, keep), op.multiply(batch_var, take))
        return relax.Tuple([bb.emit(y), bb.emit(running_mean), bb.emit(running_var)])


CONVERTERS = (Converter("BatchNormalization", BatchNormalization, since=14, replaces=True),)
