"""ONNX NegativeLogLikelihoodLoss (opsets 12-22): weights, `ignore_index`, every reduction."""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


def nll_loss(
    log_prob: Expr, target: Expr, weight: Expr | None, reduction: str, ignore_index: int | None
) -> Expr:
    """loss[n, d..] = -log_prob[n, target[n, d..], d..] * weight[target]; ignored entries 0.

    `mean` divides by the summed weights of the entries not ignored, as the spec says.
    """
    op = relax.op
    dtype = str(log_prob.ty.dtype)
    index_dtype = str(target.ty.dtype)
    if ignore_index is None:
        safe, mask = target, None
    else:
        ignored = op.equal(target, relax.const(ignore_index, index_dtype))
        safe = op.where(ignored, relax.const(0, index_dtype), target)
        mask = op.astype(op.logical_not(ignored), dtype)
    picked = op.squeeze(op.gather_elements(log_prob, op.expand_dims(safe, 1), axis=1), [1])
    scale = op.take(weight, safe, axis=0) if weight is not None else None
    if mask is not None:
        scale = mask if scale is None else op.multiply(scale, mask)
    loss = op.negative(picked if scale is None else op.multiply(picked, scale))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return op.sum(loss)
    if scale is None:
        return op.mean(loss)
    return op.divide(op.sum(loss), op.sum(scale))


def _attrs(attr: dict[str, Any]) -> tuple[str, int | None]:
    reduction = attr.get("reduction", b"mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else str(reduction)
    ignore = attr.get("ignore_index")
    return reduction, None if ignore is None else int(ignore)


class NegativeLogLikelihoodLoss(OnnxOpConverter):
    @classmethod
    def _impl_v12(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        weight = inputs[2] if len(inputs) > 2 else None
        return nll_loss(inputs[0], inputs[1], weight, *_attrs(attr))


CONVERTERS = (Converter("NegativeLogLikelihoodLoss", NegativeLogLikelihoodLoss, since=12),)
