"""ONNX TopK (opset 1+) of unsigned integers, which TVM's sort kernel refuses ("Unsupported
input dtype: uint64"). It sorts an order-preserving signed key instead (uint32 and smaller
widened to int64; uint64 with its top bit flipped, reinterpreted as int64) and gathers the
values by the indices it found. Other types go to TVM's converter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


class TopK(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset: int) -> Callable[..., Expr]:
        inner = onnx_frontend.TopK.get_converter(opset)

        def convert(bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
            x = inputs[0]
            dtype = str(x.ty.dtype)
            if not dtype.startswith("uint"):
                return inner(bb, inputs, attr, params)
            if dtype == "uint64":
                flipped = relax.op.bitwise_xor(x, relax.const(1 << 63, "uint64"))
                key = bb.emit(relax.op.astype(flipped, "int64"))
            else:
                key = bb.emit(relax.op.astype(x, "int64"))
            found = bb.emit(inner(bb, [key, *inputs[1:]], attr, params))
            indices = bb.emit(relax.TupleGetItem(found, 1))
            axis = int(attr.get("axis", -1))
            values = relax.op.gather_elements(x, indices, axis)
            return relax.Tuple([bb.emit(values), indices])

        return convert


CONVERTERS = (Converter("TopK", TopK, since=1, replaces=True),)
