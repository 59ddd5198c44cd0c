"""ONNX Split (all opsets) with zero-sized parts, which TVM's converter turns into split
indices that are not strictly increasing ("split_indices must be sorted"). With a zero in
the sizes each part is a slice (an empty part an empty constant); otherwise TVM's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from tvmflow.ops import Converter

Expr = Any


def _sizes(inputs: Any, attr: dict[str, Any], params: Any, opset: int) -> list[int] | None:
    if opset < 13:
        split = attr.get("split")
        return None if split is None else [int(s) for s in split]
    if len(inputs) < 2 or inputs[1] is None:
        return None
    value = get_constant(inputs[1], params)
    if not isinstance(value, tvm.ir.GenericConst):
        return None
    return [int(s) for s in np.asarray(value.value.numpy()).reshape(-1)]


class Split(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset: int) -> Callable[..., Expr]:
        inner = onnx_frontend.Split.get_converter(opset)

        def convert(bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
            sizes = _sizes(inputs, attr, params, opset)
            if not sizes or 0 not in sizes:
                return inner(bb, inputs, attr, params)
            x = inputs[0]
            shape = [int(v) for v in x.ty.shape.values]
            axis = int(attr.get("axis", 0)) % len(shape)
            parts, start = [], 0
            for size in sizes:
                if size == 0:
                    empty = np.empty([*shape[:axis], 0, *shape[axis + 1 :]], str(x.ty.dtype))
                    parts.append(relax.const(empty, str(x.ty.dtype)))
                else:
                    parts.append(
                        bb.emit(relax.op.strided_slice(x, [axis], [start], [start + size]))
                    )
                start += size
            return relax.Tuple(parts)

        return convert


CONVERTERS = (Converter("Split", Split, since=1, replaces=True),)
