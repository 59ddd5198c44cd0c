"""ai.onnx.preview FlexAttention (opset 1): attention with score/probability modifier graphs.

As onnx's reference: Q and K scaled by sqrt(scale) in the input type, Q·Kᵀ cast to the
softmax precision (float32 below double), the `score_mod` subgraph on the scores, softmax,
the `prob_mod` subgraph on the probabilities, then the product with V in that precision,
cast back. KV heads are shared by contiguous groups of query heads (GQA). The modifier
subgraphs are converted inline through the converter table (`common.run_graph`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.common import run_graph, shape

Expr = Any
DOMAIN = "ai.onnx.preview"


class FlexAttention(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset: int) -> Callable[..., Expr]:
        """The modifier graphs are in the default domain: convert them at the model's opset."""

        def convert(bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
            return cls._convert(bb, inputs, attr, params, opset)

        return convert

    @classmethod
    def _convert(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any, opset: int) -> Expr:
        op = relax.op
        q, k, v = inputs[0], inputs[1], inputs[2]
        dtype = str(q.ty.dtype)
        q_heads, head = shape(q)[1], shape(q)[3]
        kv_heads = shape(k)[1]
        if q_heads != kv_heads:
            k = bb.emit(op.repeat(k, q_heads // kv_heads, axis=1))
            v = bb.emit(op.repeat(v, q_heads // kv_heads, axis=1))
        scale = attr.get("scale")
        scale = float(scale) if scale is not None else 1.0 / float(np.sqrt(head))
        root = relax.const(np.sqrt(np.float32(scale)), dtype)
        scores = op.matmul(
            op.multiply(q, root), op.permute_dims(op.multiply(k, root), [0, 1, 3, 2])
        )
        precision = attr.get("softmax_precision")
        if precision is not None:
            compute = str(onnx.helper.tensor_dtype_to_np_dtype(int(precision)))
        else:
            compute = "float64" if dtype == "float64" else "float32"
        scores = bb.emit(op.astype(scores, compute))
        scores = cls._modify(bb, attr.get("score_mod"), scores, params, opset)
        probs = bb.emit(op.nn.softmax(scores, axis=-1))
        probs = cls._modify(bb, attr.get("prob_mod"), probs, params, opset)
        y = op.matmul(probs, op.astype(v, compute))
        return op.astype(bb.emit(y), str(v.ty.dtype))

    @staticmethod
    def _modify(bb: Any, graph: onnx.GraphProto | None, x: Expr, params: Any, opset: int) -> Expr:
        """`x` through a one-input, one-output modifier graph (itself when there is none)."""
        if graph is None:
            return x
        (out,) = run_graph(bb, graph, {graph.input[0].name: x}, params, opset)
        return bb.emit(relax.op.astype(out, str(x.ty.dtype)))


CONVERTERS = (Converter("FlexAttention", FlexAttention, since=1, domain=DOMAIN),)
