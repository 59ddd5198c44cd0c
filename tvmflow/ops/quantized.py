"""ONNX integer matmuls (MatMulInteger, QLinearMatMul) as u8 x i8 -> i32 kernels; integer
convolutions (ConvInteger, QLinearConv) exact in int32.

TVM's MatMulInteger widens both operands to int32 before its matmul, which no int8 kernel
can run; QLinearMatMul it lacks. Here both become one `matmul(u8, i8, out_dtype=int32)`,
the operand form of x86's VNNI dot product (`tvmflow.schedules.cpu_int8_matmul` tensorizes
it when the weight is a constant), plus zero-point terms that fuse into its epilogue:

    sum_k (a - za)(b - zb) = sum_k a*b - za * colsum(b) - zb * rowsum(a) + K * za * zb

An int8 `a` is shifted to uint8 (a + 128, za + 128) and a uint8 `b` to int8 (b - 128,
zb - 128), which leaves the sum unchanged. Everything is int32 arithmetic, which wraps
like onnxruntime's int32 accumulation: results are bit-exact. `colsum(b)` of a constant
weight folds at compile time.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any
_SHIFT = 128


def _dtype(x: Expr) -> str:
    return str(x.ty.dtype)


def _shifted(bb: Any, x: Expr, to: str) -> Expr:
    """`x` moved by 128 into the other 8-bit type (u8 -> i8: -128; i8 -> u8: +128)."""
    op = relax.op
    delta = -_SHIFT if to == "int8" else _SHIFT
    return bb.emit(op.astype(op.add(op.astype(x, "int16"), relax.const(delta, "int16")), to))


def _is_zero(x: Expr) -> bool:
    """A constant all-zero zero point (symmetric weights): its terms are left out."""
    return isinstance(x, tvm.ir.GenericConst) and not x.value.numpy().any()


def _zero_point(bb: Any, zp: Expr | None, shift: int, row: bool) -> Expr | None:
    """A zero point as int32, moved by `shift`, shaped to broadcast against [.., M, N]: per
    row ([M] -> [M, 1]) for `a`, per column ([N] -> [1, N]) for `b`. None: it is 0."""
    op = relax.op
    if zp is None or _is_zero(zp):
        return relax.const(shift, "int32") if shift else None
    z = bb.normalize(op.astype(zp, "int32"))
    if shift:
        z = op.add(z, relax.const(shift, "int32"))
    if len(z.ty.shape.values if hasattr(z.ty, "shape") else []) == 1:
        z = op.expand_dims(z, -1 if row else 0)
    return bb.emit(z)


def integer_matmul(
    bb: Any, a: Expr, b: Expr, a_zp: Expr | None = None, b_zp: Expr | None = None
) -> Expr:
    """sum_k (a - a_zp)(b - b_zp) in int32, with the matmul itself on u8 x i8 operands."""
    op = relax.op
    a_shift = _SHIFT if _dtype(a) == "int8" else 0
    b_shift = -_SHIFT if _dtype(b) == "uint8" else 0
    if a_shift:
        a = _shifted(bb, a, "uint8")
    if b_shift:
        b = _shifted(bb, b, "int8")
    za = _zero_point(bb, a_zp, a_shift, row=True)
    zb = _zero_point(bb, b_zp, b_shift, row=False)
    out = bb.emit(op.matmul(a, b, out_dtype="int32"))
    if za is not None:
        colsum = op.sum(op.astype(b, "int32"), axis=[-2], keepdims=True)
        out = bb.emit(op.subtract(out, op.multiply(za, colsum)))
    if zb is not None:
        rowsum = op.sum(op.astype(a, "int32"), axis=[-1], keepdims=True)
        out = bb.emit(op.subtract(out, op.multiply(zb, rowsum)))
    if za is not None and zb is not None:
        k = int(a.ty.shape.values[-1])
        out = bb.emit(op.add(out, op.multiply(op.multiply(za, zb), relax.const(k, "int32"))))
    return out


def _optional(inputs: Any, i: int) -> Expr | None:
    return inputs[i] if len(inputs) > i and inputs[i] is not None else None


class MatMulInteger(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        return integer_matmul(bb, inputs[0], inputs[1], _optional(inputs, 2), _optional(inputs, 3))


class QLinearMatMul(OnnxOpConverter):
    """Requantized as onnxruntime does it: round-half-even(float(acc) * (sa * sb / sy)) + zy,
    saturated; the multiplier is computed in float32 in that order."""

    @classmethod
    def _impl_v10(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        a, sa, za, b, sb, zb, sy, zy = inputs[:8]
        acc = integer_matmul(bb, a, b, za, zb)

        def f32(x: Expr) -> Expr:
            return op.astype(x, "float32")

        scale = op.divide(op.multiply(f32(sa), f32(sb)), f32(sy))
        return _requantize(acc, scale, zy)

    @classmethod
    def _impl_v21(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        return cls._impl_v10(bb, inputs, attr, params)


def _requantize(acc: Expr, scale: Expr, zy: Expr) -> Expr:
    """round-half-even(float(acc) * scale) + zy, saturated to zy's type (onnxruntime's
    MlasRequantizeOutput: float32 product, nearest-even rounding)."""
    op = relax.op
    out_dtype = _dtype(zy)
    lo, hi = (0, 255) if out_dtype == "uint8" else (-128, 127)
    y = op.round(op.multiply(op.astype(acc, "float32"), scale))
    return op.astype(op.clip(op.add(y, op.astype(zy, "float32")), lo, hi), out_dtype)


def _per_channel(bb: Any, x: Expr, ndim: int, axis: int) -> Expr:
    """A per-output-channel vector ([C] or scalar) shaped to broadcast along `axis`."""
    x = bb.normalize(x)
    if len(x.ty.shape.values) == 0:
        return x
    shape = [1] * ndim
    shape[axis] = -1
    return relax.op.reshape(x, shape)


def integer_conv(
    bb: Any, x: Expr, w: Expr, x_zp: Expr | None, w_zp: Expr | None, attr: dict[str, Any]
) -> Expr:
    """ONNX's integer convolution: conv(x - x_zp, w - w_zp) in int32, padding with x_zp
    (zeros after the subtraction), as onnx's reference and onnxruntime compute it. The
    operands are widened to int32 first: exact, not yet an int8 kernel."""
    from tvm.relax.frontend.onnx.onnx_frontend import Conv

    op = relax.op
    ndim = len(x.ty.shape.values)
    x32 = op.astype(x, "int32")
    if x_zp is not None and not _is_zero(x_zp):
        x32 = op.subtract(x32, op.astype(x_zp, "int32"))
    w32 = op.astype(w, "int32")
    if w_zp is not None and not _is_zero(w_zp):
        w32 = op.subtract(w32, _per_channel(bb, op.astype(w_zp, "int32"), ndim, 0))
    return Conv._impl_v11(bb, [bb.normalize(x32), bb.normalize(w32), None], dict(attr), None)


class ConvInteger(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        return integer_conv(
            bb, inputs[0], inputs[1], _optional(inputs, 2), _optional(inputs, 3), attr
        )


class QLinearConv(OnnxOpConverter):
    """conv(x - zx, w - zw) + bias in int32, requantized like QLinearMatMul (per-channel
    weight scales along the output channels)."""

    @classmethod
    def _impl_v10(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        x, sx, zx, w, sw, zw, sy, zy = inputs[:8]
        ndim = len(x.ty.shape.values)
        acc = bb.normalize(integer_conv(bb, x, w, zx, zw, attr))
        bias = _optional(inputs, 8)
        if bias is not None:
            acc = op.add(acc, _per_channel(bb, op.astype(bias, "int32"), ndim, 1))
        scale = op.divide(
            op.multiply(
                op.astype(sx, "float32"), _per_channel(bb, op.astype(sw, "float32"), ndim, 1)
            ),
            op.astype(sy, "float32"),
        )
        return _requantize(acc, scale, zy)


CONVERTERS = (
    Converter("MatMulInteger", MatMulInteger, since=10, replaces=True),
    Converter("QLinearMatMul", QLinearMatMul, since=10),
    Converter("ConvInteger", ConvInteger, since=10),
    Converter("QLinearConv", QLinearConv, since=10),
)
