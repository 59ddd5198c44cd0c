"""ONNX BitCast (opset 26): reinterpret the bits of each element as another dtype of equal width.

Narrow dtypes are held in 8-bit storage (`tvmflow.dtypes`): their bits are the low bits of
the storage byte (integers masked, signed ones sign-extended on the way back). A bool's byte
holds 0 or 1, so to and from bool is a value conversion of that byte.
"""

from __future__ import annotations

from typing import Any

from tvm import DataType, relax, te, tirx
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow import dtypes
from tvmflow.ops import Converter
from tvmflow.ops.cast import input_dtype, onnx_dtype

Expr = Any


def _narrow_bits(dtype: str) -> int:
    return {"int4": 4, "uint4": 4, "float4_e2m1fn": 4, "int2": 2, "uint2": 2}.get(dtype, 8)


def reinterpret(bb: Any, x: Expr, dtype: str) -> Expr:
    """Each element's bits as `dtype` (same width)."""
    if str(x.ty.dtype) == dtype:
        return x

    def compute(t: te.Tensor) -> te.Tensor:
        return te.compute(t.shape, lambda *i: tirx.reinterpret(dtype, t(*i)), name="bitcast")

    return bb.emit_te(compute, x, primfunc_name_hint="bitcast")


def _to_bits(bb: Any, x: Expr, src: str) -> Expr:
    """Unsigned bits of the source element (narrow integers: masked to their width)."""
    if src in dtypes.INT_STORAGE:
        mask = relax.const((1 << _narrow_bits(src)) - 1, "int32")
        return bb.emit(
            relax.op.astype(relax.op.bitwise_and(relax.op.astype(x, "int32"), mask), "uint8")
        )
    return reinterpret(bb, x, f"uint{DataType(str(x.ty.dtype)).bits}")


def _from_bits(bb: Any, bits: Expr, dst: str) -> Expr:
    """Destination storage from unsigned bits."""
    if dst in dtypes.INT_STORAGE and not dst.startswith("u"):
        half = relax.const(1 << (_narrow_bits(dst) - 1), "int32")
        wide = relax.op.astype(bits, "int32")
        return bb.emit(
            relax.op.astype(relax.op.subtract(relax.op.bitwise_xor(wide, half), half), "int8")
        )
    return reinterpret(bb, bits, dtypes.storage_dtype(dst))


class BitCast(OnnxOpConverter):
    @classmethod
    def _impl_v26(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        x = inputs[0]
        src, dst = input_dtype(x, attr, 0), onnx_dtype(int(attr["to"]))
        if src is None:
            raise ValueError("BitCast needs a tensor input")
        if "bool" in (src, dst):  # a bool byte is 0 or 1: its bits are its value
            return relax.op.astype(x, dtypes.storage_dtype(dst))
        return _from_bits(bb, _to_bits(bb, x, src), dst)


CONVERTERS = (Converter("BitCast", BitCast, since=26),)
