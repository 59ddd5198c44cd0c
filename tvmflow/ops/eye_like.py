"""ONNX EyeLike (opset 9+): TVM's refuses a `dtype` attribute unlike the input's type. The
output depends on the (static) shape only, so it is a constant."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


class EyeLike(OnnxOpConverter):
    @classmethod
    def _impl_v9(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        x = inputs[0]
        rows, cols = (int(d) for d in x.ty.shape.values)
        dtype = (
            helper.tensor_dtype_to_np_dtype(int(attr["dtype"]))
            if "dtype" in attr
            else np.dtype(str(x.ty.dtype))
        )
        eye = np.eye(rows, cols, int(attr.get("k", 0)), dtype=dtype)
        return relax.const(eye, str(eye.dtype))  # without the dtype, float64 becomes float32


CONVERTERS = (Converter("EyeLike", EyeLike, since=9, replaces=True),)
