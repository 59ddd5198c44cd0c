"""ONNX Det (opset 11): determinants of (..., M, M) matrices by Gaussian elimination.

M is static, so the elimination is unrolled: at step k the row with the largest |pivot| at or
below k is swapped in (a rank-1 update, flipping the sign when it moves), multiplied into the
determinant, and eliminated from the rows below. Partial pivoting keeps it as accurate as
LAPACK's LU for well-scaled inputs; a zero pivot gives a zero determinant, not NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.common import shape

Expr = Any


class Det(OnnxOpConverter):
    @classmethod
    def _impl_v11(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        a = inputs[0]
        dims = shape(a)
        size = dims[-1]
        dtype = str(a.ty.dtype)
        acc = "float32" if dtype == "float16" else dtype
        a = bb.emit(op.astype(a, acc)) if acc != dtype else a
        one, zero = relax.const(1.0, acc), relax.const(0.0, acc)
        rows = np.arange(size)
        det: Expr = relax.const(1.0, acc)
        for k in range(size):
            column = op.abs(op.squeeze(op.strided_slice(a, [len(dims) - 1], [k], [k + 1]), [-1]))
            below = relax.const((rows >= k).astype(acc))  # rows above k are done
            candidates = op.subtract(op.multiply(column, below), op.subtract(one, below))
            pivot_row = bb.emit(op.argmax(candidates, axis=-1))  # (...,)
            picked = bb.emit(
                op.astype(op.equal(op.expand_dims(pivot_row, -1), relax.const(rows, "int64")), acc)
            )  # one-hot of the pivot row (..., M)
            new_k = bb.emit(op.sum(op.multiply(op.expand_dims(picked, -1), a), axis=-2))
            old_k = op.squeeze(op.strided_slice(a, [len(dims) - 2], [k], [k + 1]), [-2])
            unit_k = relax.const((rows == k).astype(acc))
            swap = op.subtract(unit_k, picked)  # row k takes the pivot row, which takes row k
            a = bb.emit(
                op.add(
                    a,
                    op.multiply(
                        op.expand_dims(swap, -1), op.expand_dims(op.subtract(new_k, old_k), -2)
                    ),
                )
            )
            moved = op.not_equal(pivot_row, relax.const(k, "int64"))
            pivot = bb.emit(
                op.squeeze(op.strided_slice(new_k, [len(dims) - 2], [k], [k + 1]), [-1])
            )
            det = bb.emit(op.multiply(det, op.where(moved, op.negative(pivot), pivot)))
            if k + 1 == size:
                break
            safe = op.where(op.equal(pivot, zero), one, pivot)
            after = relax.const((rows > k).astype(acc))
            column_k = op.squeeze(op.strided_slice(a, [len(dims) - 1], [k], [k + 1]), [-1])
            factors = op.multiply(op.divide(column_k, op.expand_dims(safe, -1)), after)
            a = bb.emit(
                op.subtract(a, op.multiply(op.expand_dims(factors, -1), op.expand_dims(new_k, -2)))
            )
        return op.astype(det, dtype) if acc != dtype else det


CONVERTERS = (Converter("Det", Det, since=11),)
