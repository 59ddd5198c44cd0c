"""ONNX LayerNormalization (opset 17+) with its Mean and InvStdDev outputs.

TVM's converter returns scalar zero placeholders for outputs 1 and 2 (wrong values, wrong
shapes). When only Y is used this defers to TVM's (fused `nn.layer_norm`); otherwise it
computes all three: statistics over axes axis..rank-1, kept as size-1 dims, in float32
(`stash_type` 1) for half-precision inputs.
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


class LayerNormalization(OnnxOpConverter):
    @classmethod
    def _impl_v17(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        if attr["tvm_custom"]["num_outputs"] == 1:
            return onnx_frontend.LayerNormalization._impl_v17(bb, inputs, attr, params)
        op = relax.op
        x, scale = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        rank = len(x.ty.shape.values)
        axis = int(attr.get("axis", -1)) % rank
        axes = list(range(axis, rank))
        dtype = str(x.ty.dtype)
        stash = "float32" if int(attr.get("stash_type", 1)) == 1 and dtype != "float64" else dtype
        xs = bb.emit(op.astype(x, stash)) if stash != dtype else x
        mean = bb.emit(op.mean(xs, axes, keepdims=True))
        centered = bb.emit(op.subtract(xs, mean))
        var = bb.emit(op.mean(op.multiply(centered, centered), axes, keepdims=True))
        eps = relax.const(float(attr.get("epsilon", 1e-5)), stash)
        inv_std = bb.emit(op.rsqrt(op.add(var, eps)))
        y = bb.emit(op.multiply(op.multiply(centered, inv_std), op.astype(scale, stash)))
        if bias is not None:
            y = bb.emit(op.add(y, op.astype(bias, stash)))
        if stash != dtype:
            y = bb.emit(op.astype(y, dtype))
        return relax.Tuple([y, mean, inv_std])


CONVERTERS = (Converter("LayerNormalization", LayerNormalization, since=17, replaces=True),)
