"""ONNX TopK: k given at run time, k as an input at opset 10, and unsigned integers.

TVM's converter refuses a k that is not a constant ("TopK k must be a constant"); torchvision's
detectors keep `min(1000, candidates)` per class, a count known only at run time. Such a k
sorts the whole axis and keeps its first k (the outputs' size on that axis is a symbolic dim,
data-dependent as ONNX defines it). TVM also converts opset 10, where k became an input, with
its opset-1 rule (the `k` attribute, absent, so 1). Its sort kernel refuses unsigned integers
("Unsupported input dtype: uint64"): those sort an order-preserving signed key instead
(uint32 and smaller widened to int64; uint64 with its top bit flipped, reinterpreted as int64)
and gather the values by the indices found."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from tvmflow.ops import Converter
from tvmflow.ops.common import first_along

Expr = Any


def _sort_key(bb: Any, x: Expr) -> Expr:
    """`x`, or an int64 key that orders like it where TVM cannot sort its type."""
    dtype = str(x.ty.dtype)
    if not dtype.startswith("uint"):
        return x
    if dtype == "uint64":
        flipped = relax.op.bitwise_xor(x, relax.const(1 << 63, "uint64"))
        return bb.emit(relax.op.astype(flipped, "int64"))
    return bb.emit(relax.op.astype(x, "int64"))


def _constant_k(k: Expr, params: Any) -> int | None:
    value = get_constant(k, params)
    if not isinstance(value, tvm.ir.GenericConst):
        return None
    return int(np.asarray(value.value.numpy()).reshape(-1)[0])


class TopK(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset: int) -> Callable[..., Expr]:
        def convert(bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
            x = inputs[0]
            rank = len(x.ty.shape.values)
            axis = int(attr.get("axis", -1)) % rank
            largest = bool(attr.get("largest", 1))
            key = _sort_key(bb, x)
            k = int(attr.get("k", 1)) if opset < 10 else _constant_k(inputs[1], params)

            def topk(count: int) -> Expr:
                found = relax.op.topk(key, count, axis, "both", largest, "int64")
                return bb.emit(found)

            if k is not None and k < 1:  # empty (relax's topk reads k < 1 as "all")
                indices = bb.emit(
                    relax.op.astype(relax.op.strided_slice(x, [axis], [0], [0]), "int64")
                )
                return relax.Tuple([bb.emit(relax.op.strided_slice(x, [axis], [0], [0])), indices])
            if k is not None:
                found = topk(k)
                indices = bb.emit(relax.TupleGetItem(found, 1))
            else:  # all of the axis, sorted, then its first k
                found = topk(-1)
                indices = first_along(
                    bb, bb.emit(relax.TupleGetItem(found, 1)), axis, inputs[1], "topk_count"
                )
            if key is x and k is not None:
                values = bb.emit(relax.TupleGetItem(found, 0))
            else:
                values = bb.emit(relax.op.gather_elements(x, indices, axis))
            return relax.Tuple([values, indices])

        return convert


CONVERTERS = (Converter("TopK", TopK, since=1, replaces=True),)
