"""ONNX Dropout (all opsets) at inference: Y = X and an all-true mask.

TVM's converter emits `nn.dropout`, whose (output, mask) tuple the importer then mis-binds
("Expected nested to match tuple") on every node test. Training mode with a non-zero ratio
draws random numbers, which a compiled inference graph cannot reproduce: refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from tvmflow.ops import Converter

Expr = Any


def _constant(value: Any, params: Any, default: float) -> float:
    if value is None:
        return default
    const = get_constant(value, params)
    if not isinstance(const, tvm.ir.GenericConst):
        raise ValueError("Dropout needs a constant ratio and training_mode")
    return float(np.asarray(const.value.numpy()).reshape(()))


class Dropout(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        ratio = float(attr.get("ratio", 0.5))
        training = len(inputs) > 2 and _constant(inputs[2], params, 0.0) != 0.0
        if len(inputs) > 1:
            ratio = _constant(inputs[1], params, 0.5)
        if training and ratio != 0.0:
            raise ValueError("Dropout in training mode is random; compile an inference graph")
        x = inputs[0]
        if attr["tvm_custom"]["num_outputs"] == 1:
            return x
        mask = relax.op.ones(x.ty.shape, "bool")
        return relax.Tuple([x, mask])


CONVERTERS = (Converter("Dropout", Dropout, since=1, replaces=True),)
