"""ONNX QuantizeLinear / DequantizeLinear for narrow dtypes and blocked scales, replacing TVM's.

TVM's converters refuse `block_size` and float8/float4/int4/int2 zero points and outputs.
These follow `onnx.reference` (`_CommonQuantizeLinear`, `DequantizeLinear`): scales and zero
points broadcast per tensor, per axis or per block; integers round half to even and clip to
the output range; float8 goes through `tvmflow.ops.cast`'s encoder (with `saturate`),
float4 adds its zero point first. The ordinary per-tensor/per-axis 8/16-bit cases stay
TVM's (`relax.op.quantize`/`dequantize`), which int8 kernel work relies on.
"""

from __future__ import annotations

import functools
from typing import Any

from tvm import relax, te, tirx
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow import dtypes
from tvmflow.ops import Converter
from tvmflow.ops.cast import FORMATS, decode_float, encode_float, input_dtype, onnx_dtype

Expr = Any

RANGES = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "uint16": (0, 65535),
    "int16": (-32768, 32767),
    "uint4": (0, 15),
    "int4": (-8, 7),
    "uint2": (0, 3),
    "int2": (-2, 1),
}


def _shape(x: Expr) -> list[int]:
    return [int(d) for d in x.ty.shape.values]


def broadcast_param(bb: Any, value: Expr, x: Expr, axis: int, block_size: int) -> Expr:
    """A scale or zero point shaped to broadcast against `x` (onnx.reference's reshape_input)."""
    shape, dims = _shape(x), _shape(value)
    if not dims or (len(dims) == 1 and dims[0] == 1):
        return bb.emit(relax.op.reshape(value, [])) if dims else value
    axis = axis % len(shape)
    if not block_size:
        target = [1] * len(shape)
        target[axis] = dims[0]
        return bb.emit(relax.op.reshape(value, target))
    repeated = bb.emit(relax.op.repeat(value, block_size, axis=axis))
    return bb.emit(relax.op.strided_slice(repeated, [axis], [0], [shape[axis]]))


def _narrow_or_blocked(attr: dict[str, Any], *types: str | None) -> bool:
    return bool(attr.get("block_size", 0)) or any(t and dtypes.is_narrow(t) for t in types)


def _round_clip(bb: Any, q: Expr, zero_point: Expr | None, dtype: str) -> Expr:
    """round half to even, add the zero point, clip to `dtype`'s range (as its storage)."""
    low, high = RANGES[dtype]

    def compute(t: te.Tensor) -> te.Tensor:
        # clip before the int conversion (Inf/NaN/huge have no int32), wide enough for any zp
        bound = tirx.const(float(1 << 20), "float32")
        return te.compute(
            t.shape,
            lambda *i: tirx.Cast("int32", tirx.nearbyint(tirx.max(tirx.min(t(*i), bound), -bound))),
            name="round_half_even",
        )

    rounded = bb.emit_te(compute, q, primfunc_name_hint="round_half_even")
    if zero_point is not None:
        rounded = relax.op.add(rounded, relax.op.astype(zero_point, "int32"))
    clipped = relax.op.clip(rounded, low, high)
    return bb.emit(relax.op.astype(clipped, dtypes.storage_dtype(dtype)))


class QuantizeLinear(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset: int) -> Any:
        """Ordinary cases go to TVM's converter of the same opset."""
        return functools.partial(cls.convert, onnx_frontend.QuantizeLinear.get_converter(opset))

    @classmethod
    def convert(
        cls, tvm_impl: Any, bb: Any, inputs: Any, attr: dict[str, Any], params: Any
    ) -> Expr:
        x, scale = inputs[0], inputs[1]
        zero_point = inputs[2] if len(inputs) > 2 else None
        zp_dtype = input_dtype(zero_point, attr, 2) if zero_point is not None else None
        out_dtype = zp_dtype or (
            onnx_dtype(int(attr["output_dtype"])) if attr.get("output_dtype") else "uint8"
        )
        if not _narrow_or_blocked(attr, out_dtype):
            return tvm_impl(bb, inputs, attr, params)
        axis, block = int(attr.get("axis", 1)), int(attr.get("block_size", 0))
        scale = broadcast_param(bb, scale, x, axis, block)
        precision = attr.get("precision", 0)
        if precision:
            compute = onnx_dtype(int(precision))
            x, scale = relax.op.astype(x, compute), relax.op.astype(scale, compute)
        q = bb.emit(relax.op.astype(relax.op.divide(x, scale), "float32"))
        zp = broadcast_param(bb, zero_point, x, axis, block) if zero_point is not None else None
        if out_dtype in RANGES:
            return _round_clip(bb, q, zp, out_dtype)
        if out_dtype == "float4_e2m1fn" and zp is not None:
            q = bb.emit(relax.op.add(q, decode_float(bb, zp, out_dtype)))
        if out_dtype in FORMATS:
            return encode_float(bb, q, out_dtype, bool(attr.get("saturate", 1)))
        raise ValueError(f"QuantizeLinear to {out_dtype} is not a quantized type")


class DequantizeLinear(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset: int) -> Any:
        """Ordinary cases go to TVM's converter of the same opset."""
        return functools.partial(cls.convert, onnx_frontend.DequantizeLinear.get_converter(opset))

    @classmethod
    def convert(
        cls, tvm_impl: Any, bb: Any, inputs: Any, attr: dict[str, Any], params: Any
    ) -> Expr:
        x, scale = inputs[0], inputs[1]
        zero_point = inputs[2] if len(inputs) > 2 else None
        x_dtype = input_dtype(x, attr, 0)
        if not _narrow_or_blocked(attr, x_dtype):
            return tvm_impl(bb, inputs, attr, params)
        axis, block = int(attr.get("axis", 1)), int(attr.get("block_size", 0))
        out_dtype = (
            onnx_dtype(int(attr["output_dtype"]))
            if attr.get("output_dtype")
            else str(scale.ty.dtype)
        )
        if x_dtype in FORMATS:  # float zero points are zero (float8) or ignored (float4)
            dx = decode_float(bb, x, x_dtype)
        else:
            dx = relax.op.astype(x, "float32")
            if zero_point is not None:
                zp = broadcast_param(bb, zero_point, x, axis, block)
                dx = relax.op.subtract(dx, relax.op.astype(zp, "float32"))
        scale = relax.op.astype(broadcast_param(bb, scale, x, axis, block), "float32")
        return relax.op.astype(relax.op.multiply(dx, scale), out_dtype)


CONVERTERS = (
    Converter("QuantizeLinear", QuantizeLinear, since=10, replaces=True),
    Converter("DequantizeLinear", DequantizeLinear, since=10, replaces=True),
)
