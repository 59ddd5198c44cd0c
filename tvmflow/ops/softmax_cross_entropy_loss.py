"""ONNX SoftmaxCrossEntropyLoss (opsets 12-22): NLL of log_softmax over axis 1, log_prob out."""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.nll_loss import _attrs, nll_loss

Expr = Any


class SoftmaxCrossEntropyLoss(OnnxOpConverter):
    @classmethod
    def _impl_v12(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        log_prob = bb.emit(relax.op.nn.log_softmax(inputs[0], axis=1))
        weight = inputs[2] if len(inputs) > 2 else None
        loss = bb.emit(nll_loss(log_prob, inputs[1], weight, *_attrs(attr)))
        return relax.Tuple([loss, log_prob])


CONVERTERS = (Converter("SoftmaxCrossEntropyLoss", SoftmaxCrossEntropyLoss, since=12),)
