"""ONNX RotaryEmbedding (opset 23): RoPE on 4-D (B, H, S, D) or 3-D (B, S, H*D) inputs.

Follows onnx's reference: the first `rotary_embedding_dim` features of each head are rotated
(all when 0), paired as halves or, `interleaved`, as even/odd features; the caches are indexed
by `position_ids` ((B, S) → (B, S, dim/2)) or, without them, are already (B, S, dim/2).
The rotation is done in the input's own layout (no transposes).
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


def _shape(x: Expr) -> list[int]:
    return [int(v) for v in x.ty.shape.values]


class RotaryEmbedding(OnnxOpConverter):
    @classmethod
    def _impl_v23(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        x, cos, sin = inputs[0], inputs[1], inputs[2]
        positions = inputs[3] if len(inputs) > 3 else None
        shape = _shape(x)
        if len(shape) == 3:  # (B, S, H*D) → (B, S, H, D); the caches broadcast over axis 2
            heads = int(attr["num_heads"])
            x = bb.emit(op.reshape(x, [*shape[:2], heads, shape[2] // heads]))
            head_axis = 2
        else:  # (B, H, S, D); the caches broadcast over axis 1
            head_axis = 1
        head = _shape(x)[3]
        dim = int(attr.get("rotary_embedding_dim", 0)) or head
        if positions is not None:
            cos = bb.emit(op.take(cos, positions, axis=0))
            sin = bb.emit(op.take(sin, positions, axis=0))
        cos = bb.emit(op.expand_dims(cos, head_axis))
        sin = bb.emit(op.expand_dims(sin, head_axis))
        rotate = bb.emit(op.strided_slice(x, [3], [0], [dim])) if dim < head else x
        interleaved = bool(attr.get("interleaved", 0))
        if interleaved:
            x1 = bb.emit(op.strided_slice(rotate, [3], [0], [dim], [2]))
            x2 = bb.emit(op.strided_slice(rotate, [3], [1], [dim], [2]))
        else:
            halves = bb.emit(op.split(rotate, 2, axis=3))
            x1, x2 = bb.emit(relax.TupleGetItem(halves, 0)), bb.emit(relax.TupleGetItem(halves, 1))
        real = bb.emit(op.subtract(op.multiply(cos, x1), op.multiply(sin, x2)))
        imag = bb.emit(op.add(op.multiply(sin, x1), op.multiply(cos, x2)))
        if interleaved:
            pairs = bb.emit(op.stack([real, imag], axis=4))
            rotated = bb.emit(op.reshape(pairs, _shape(rotate)))
        else:
            rotated = bb.emit(op.concat([real, imag], axis=3))
        if dim < head:
            rest = bb.emit(op.strided_slice(x, [3], [dim], [head]))
            rotated = bb.emit(op.concat([rotated, rest], axis=3))
        return op.reshape(rotated, shape) if len(shape) == 3 else rotated


CONVERTERS = (Converter("RotaryEmbedding", RotaryEmbedding, since=23),)
