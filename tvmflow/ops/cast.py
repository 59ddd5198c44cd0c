"""ONNX Cast and CastLike for the narrow dtypes (float8, float4, int4/int2), replacing TVM's.

Compiled code holds narrow dtypes in 8-bit storage (`tvmflow.dtypes`), and the frontend's
`tvmflow.narrow` pass tells each node the real dtypes of its inputs (`tvmflow_types`, since
the storage dtype alone cannot say whether a uint8 holds float8 bits). TVM's LLVM casts of
float8 are wrong and it cannot hold sub-byte tensors at all, so conversions are done here:

- to float8/float4: integer bit manipulation on the float32 value (round to nearest even,
  the `saturate` attribute, NaN/Inf rules of the fn/fnuz variants), as `onnx.reference` does;
- to float8e8m0: its exponent, rounded up, down or to nearest (`round_mode`);
- from float8/float4: a lookup table of all 256 codes (decoded by ml_dtypes at compile time);
- to int4/int2: truncate and wrap around, as `onnx.reference` (ml_dtypes) does.

Casts between ordinary dtypes stay TVM's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import relax, te, tirx
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow import dtypes
from tvmflow.errors import TvmflowError
from tvmflow.ops import Converter

Expr = Any
TYPES_ATTR = "tvmflow_types"  # set by tvmflow.narrow: each input's real ONNX elem type (0: as is)


E8M0 = "float8_e8m0fnu"  # powers of two only: its own encoder


@dataclass(frozen=True)
class FloatFormat:
    """A small float format's encoding: codes are sign bit | magnitude code."""

    man_bits: int
    bias: int
    max_code: int  # magnitude code of the largest finite value
    nan_code: int  # magnitude code of NaN (fnuz: the whole code, 0x80)
    inf_code: int | None = None
    fnuz: bool = False  # no negative zero; 0x80 is NaN
    sign_bit: int = 0x80
    always_saturate: bool = False  # no Inf or NaN to overflow to (float4)


FORMATS = {
    "float8_e4m3fn": FloatFormat(3, 7, 0x7E, 0x7F),
    "float8_e4m3fnuz": FloatFormat(3, 8, 0x7F, 0x80, fnuz=True),
    "float8_e5m2": FloatFormat(2, 15, 0x7B, 0x7E, inf_code=0x7C),
    "float8_e5m2fnuz": FloatFormat(2, 16, 0x7F, 0x80, fnuz=True),
    "float4_e2m1fn": FloatFormat(1, 1, 0x7, 0x0, sign_bit=0x8, always_saturate=True),
}


def onnx_dtype(elem_type: int) -> str:
    """The dtype name (numpy/ml_dtypes, as TVM's importer spells them) of an ONNX elem type."""
    import onnx

    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def input_dtype(x: Expr, attr: dict[str, Any], index: int) -> str | None:
    """The real dtype of input `index`: the narrow pass's note, else its Relax dtype."""
    noted = tuple(attr.get(TYPES_ATTR, ()))
    if index < len(noted) and noted[index]:
        return onnx_dtype(int(noted[index]))
    ty = getattr(x, "ty", None)
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def _encode_scalar(v: Any, fmt: FloatFormat, saturate: bool) -> Any:
    """One float32 value → its code in `fmt` (int32), round to nearest even."""
    i32, u32 = "int32", "uint32"
    emin = 1 - fmt.bias
    largest = 4.0 * 2.0 ** ((fmt.max_code >> fmt.man_bits) - fmt.bias)  # past the top binade
    neg = tirx.Cast(i32, tirx.shift_right(tirx.reinterpret(u32, v), tirx.const(31, u32)))
    a = tirx.min(tirx.abs(v), tirx.const(largest, "float32"))  # Inf → an overflow, too
    exponent = tirx.Cast(i32, tirx.shift_right(tirx.reinterpret(u32, a), tirx.const(23, u32)))
    e = tirx.max(exponent - 127, emin)  # below the normal range: the subnormal quantum
    quantum = tirx.reinterpret("float32", tirx.Cast(u32, (e - fmt.man_bits + 127) * (1 << 23)))
    steps = tirx.Cast(i32, tirx.nearbyint(a / quantum))
    # Normal and subnormal alike: a carry out of the mantissa bumps the exponent field.
    magnitude = (e - emin) * (1 << fmt.man_bits) + steps

    def signed(code: int | Any) -> Any:
        return tirx.Select(neg == 1, code | fmt.sign_bit, code)

    if fmt.always_saturate:  # no NaN code: onnx.reference (ml_dtypes) gives -0 for NaN, 0 for -NaN
        nan = tirx.Select(neg == 1, tirx.const(0, i32), tirx.const(fmt.sign_bit, i32))
        finite = signed(magnitude)
    elif fmt.fnuz:
        nan = tirx.const(fmt.nan_code, i32)
        finite = tirx.Select(magnitude == 0, tirx.const(0, i32), signed(magnitude))
    else:
        nan = signed(tirx.const(fmt.nan_code, i32))
        finite = signed(magnitude)
    if saturate or fmt.always_saturate:
        overflow = signed(tirx.const(fmt.max_code, i32))
    elif fmt.inf_code is not None:
        overflow = signed(tirx.const(fmt.inf_code, i32))
    else:
        overflow = nan
    return tirx.Select(tirx.isnan(v), nan, tirx.Select(magnitude > fmt.max_code, overflow, finite))


def encode_float(bb: Any, x: Expr, dtype: str, saturate: bool) -> Expr:
    """A float tensor → uint8 codes of the small float format `dtype`."""
    fmt = FORMATS[dtype]
    if str(x.ty.dtype) != "float32":
        x = bb.emit(relax.op.astype(x, "float32"))

    def compute(t: te.Tensor) -> te.Tensor:
        return te.compute(
            t.shape,
            lambda *i: tirx.Cast("uint8", _encode_scalar(t(*i), fmt, saturate)),
            name=f"encode_{dtype}",
        )

    return bb.emit_te(compute, x, primfunc_name_hint=f"encode_{dtype}")


def _encode_e8m0_scalar(v: Any, saturate: bool, round_mode: str) -> Any:
    """One float32 value → float8e8m0 (a power of two; sign dropped), as onnx.reference does."""
    u32 = "uint32"
    bits = tirx.reinterpret(u32, v)
    exponent = tirx.bitwise_and(tirx.shift_right(bits, tirx.const(23, u32)), tirx.const(0xFF, u32))

    def bit(mask: int) -> Any:
        return tirx.bitwise_and(bits, tirx.const(mask, u32)) != tirx.const(0, u32)

    if round_mode == "nearest":  # guard bit, and round or sticky bits or an odd exponent
        up = tirx.all(bit(0x400000), tirx.any(bit(0x200000), bit(0x1FFFFF), exponent > 0))
    elif round_mode == "up":
        up = bit(0x7FFFFF)
    elif round_mode == "down":
        up = tirx.const(False, "bool")
    else:
        raise ValueError(f"Cast to float8e8m0: unknown round_mode {round_mode!r}")
    if saturate:  # the largest exponent does not round up into NaN
        up = tirx.all(up, exponent != tirx.const(0xFE, u32))
    rounded = exponent + tirx.Cast(u32, up)
    return tirx.Select(exponent == tirx.const(0xFF, u32), tirx.const(0xFF, u32), rounded)


def encode_e8m0(bb: Any, x: Expr, saturate: bool, round_mode: str) -> Expr:
    """A float tensor → uint8 codes of float8e8m0 (`round_mode` up, down or nearest)."""
    if str(x.ty.dtype) != "float32":
        x = bb.emit(relax.op.astype(x, "float32"))

    def compute(t: te.Tensor) -> te.Tensor:
        return te.compute(
            t.shape,
            lambda *i: tirx.Cast("uint8", _encode_e8m0_scalar(t(*i), saturate, round_mode)),
            name="encode_float8_e8m0fnu",
        )

    return bb.emit_te(compute, x, primfunc_name_hint="encode_float8_e8m0fnu")


@functools.cache
def _decode_table(dtype: str) -> np.ndarray:
    codes = np.arange(256, dtype=np.uint8)
    if dtype == "float4_e2m1fn":
        codes &= 0x0F
    return codes.view(dtypes.numpy_dtype(dtype)).astype(np.float32)


def decode_float(bb: Any, x: Expr, dtype: str) -> Expr:
    """uint8 codes of the small float format `dtype` → float32 (a 256-entry table)."""
    table = relax.const(_decode_table(dtype), "float32")
    # every uint8 code is in the table: "clip" only spares TVM's warning about "fast" mode
    return bb.emit(relax.op.take(table, relax.op.astype(x, "int32"), axis=0, mode="clip"))


def wrap_int(bb: Any, x: Expr, dtype: str) -> Expr:
    """Any tensor → the narrow integer `dtype` (storage int8/uint8): truncate, wrap around."""
    bits = int(dtype.removeprefix("u").removeprefix("int"))
    if _is_float(str(x.ty.dtype)):
        zero = relax.const(0, str(x.ty.dtype))
        x = relax.op.where(relax.op.isfinite(x), x, zero)
    t = relax.op.bitwise_and(relax.op.astype(x, "int32"), relax.const((1 << bits) - 1, "int32"))
    if not dtype.startswith("u"):
        half = relax.const(1 << (bits - 1), "int32")
        t = relax.op.subtract(relax.op.bitwise_xor(t, half), half)
    return bb.emit(relax.op.astype(t, dtypes.storage_dtype(dtype)))


def cast(bb: Any, x: Expr, src: str, dst: str, attr: dict[str, Any], params: Any) -> Expr:
    """Cast `x` (holding real dtype `src`) to real dtype `dst`; narrow ones as storage."""
    if src in dtypes.FLOAT_STORAGE:
        x, src = decode_float(bb, x, src), "float32"
    if dst == E8M0:
        round_mode = attr.get("round_mode", b"up")
        round_mode = round_mode.decode() if isinstance(round_mode, bytes) else str(round_mode)
        return encode_e8m0(bb, x, bool(attr.get("saturate", 1)), round_mode)
    if dst in FORMATS:
        return encode_float(bb, x, dst, bool(attr.get("saturate", 1)))
    if dst in dtypes.INT_STORAGE:
        return wrap_int(bb, x, dst)
    return onnx_frontend.Cast._impl_v13(bb, [x], {"to": dst}, params)


def _check_not_string(dtype: str | None, op: str) -> None:
    if dtype is not None and dtype in ("object", "str"):
        raise TvmflowError(
            f"unsupported dtype: {op} to or from string (compiled code holds no strings); "
            "do string conversions outside the model"
        )


class Cast(OnnxOpConverter):
    """Cast; TVM's for shapes, constants and ordinary dtypes."""

    @classmethod
    def _impl_v13(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        x = inputs[0]
        dst = onnx_dtype(int(attr["to"]))
        src = input_dtype(x, attr, 0)
        _check_not_string(dst, "Cast")
        _check_not_string(src, "Cast")
        if src is None or not (dtypes.is_narrow(src) or dtypes.is_narrow(dst)):
            return onnx_frontend.Cast._impl_v13(bb, inputs, {"to": dst}, params)
        return cast(bb, x, src, dst, attr, params)


class CastLike(OnnxOpConverter):
    """CastLike: Cast to the dtype of the second input."""

    @classmethod
    def _impl_v15(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        x = inputs[0]
        dst = input_dtype(inputs[1], attr, 1)
        src = input_dtype(x, attr, 0)
        _check_not_string(dst, "CastLike")
        _check_not_string(src, "CastLike")
        if src is None or dst is None or not (dtypes.is_narrow(src) or dtypes.is_narrow(dst)):
            return onnx_frontend.CastLike._impl_v15(bb, inputs, attr, params)
        return cast(bb, x, src, dst, attr, params)


CONVERTERS = (
    Converter("Cast", Cast, since=13, replaces=True),
    Converter("CastLike", CastLike, since=15, replaces=True),
)
