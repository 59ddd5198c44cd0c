"""ONNX NonMaxSuppression (opset 10+): TVM's converter with an honest output type.

TVM's converter returns the selected boxes trimmed at run time to the number selected, but
types them with the padded size (batches x classes x max boxes): the artifact's signature
then promised a shape the data never has. Here the count is a symbolic dim (the output's
size is data-dependent, as ONNX defines it).
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


class NonMaxSuppression(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        padded = onnx_frontend.NonMaxSuppression._impl_v10(bb, inputs, attr, params)
        selected = tvm.tirx.Var("num_selected", "int64")
        return bb.match_cast(padded, relax.TensorType([selected, 3], "int64"))


CONVERTERS = (Converter("NonMaxSuppression", NonMaxSuppression, since=10, replaces=True),)
