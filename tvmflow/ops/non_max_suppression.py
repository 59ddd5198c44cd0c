"""ONNX NonMaxSuppression (opset 10+): TVM's converter with an honest output type.

TVM's converter returns the selected boxes trimmed at run time to the number selected, but
types them with the padded size (batches x classes x max boxes): the artifact's signature
then promised a shape the data never has. Here the count is a symbolic dim (the output's
size is data-dependent, as ONNX defines it).

TVM's kernel also suppresses a box when IoU >= the threshold and skips suppression entirely
at a threshold of 0; ONNX suppresses when IoU > the threshold. The next float32 above the
threshold turns one into the other exactly. An absent threshold is ONNX's 0 (TVM: 0.5), an
absent score threshold filters nothing (TVM: drops scores <= 0). Left as TVM has it: its
kernel marks suppressed boxes with a negative score, so boxes scored below 0 are never
compared (detectors' scores are probabilities).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from tvmflow.ops import Converter

Expr = Any


def _constant(expr: Expr, params: Any, default: float) -> float | None:
    """A scalar threshold input's value, `default` when absent, None when not constant."""
    if expr is None:
        return default
    value = get_constant(expr, params)
    if not isinstance(value, tvm.ir.GenericConst):
        return None
    return float(np.asarray(value.value.numpy()).reshape(-1)[0])


class NonMaxSuppression(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        inputs = list(inputs) + [None] * (5 - len(inputs))
        iou = _constant(inputs[3], params, 0.0)
        score = _constant(inputs[4], params, float(np.finfo(np.float32).min))
        if iou is None or score is None:
            raise ValueError("NonMaxSuppression needs constant thresholds")
        above = np.nextafter(np.float32(iou), np.float32(np.inf))
        inputs[3] = relax.const(np.array([above], np.float32), "float32")
        inputs[4] = relax.const(np.array([score], np.float32), "float32")
        padded = onnx_frontend.NonMaxSuppression._impl_v10(bb, inputs, attr, params)
        selected = tvm.tirx.Var("num_selected", "int64")
        return bb.match_cast(padded, relax.TensorType([selected, 3], "int64"))


CONVERTERS = (Converter("NonMaxSuppression", NonMaxSuppression, since=10, replaces=True),)
