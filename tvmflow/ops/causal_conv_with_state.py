"""ONNX CausalConvWithState (opset 27): stateful causal depthwise 1-D conv (Mamba, DeltaNet).

The input (B, C, L) is left-padded with `past_state` (B, C, k-1) (zeros without it) and
convolved depthwise with the (C, 1, k) weight, valid padding, plus the optional bias and the
fused SiLU (`activation` silu or swish). `present_state` is the last k-1 positions of the
padded sequence, the carry for the next decode step.
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


def _shape(x: Expr) -> list[int]:
    return [int(v) for v in x.ty.shape.values]


class CausalConvWithState(OnnxOpConverter):
    @classmethod
    def _impl_v27(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        x, weight = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        past = inputs[3] if len(inputs) > 3 else None
        activation = attr.get("activation", b"none")
        activation = activation.decode() if isinstance(activation, bytes) else str(activation)
        if activation not in ("none", "silu", "swish"):
            raise ValueError(f"CausalConvWithState: unknown activation {activation!r}")
        channels, length = _shape(x)[1:]
        k = _shape(weight)[2]
        dtype = str(x.ty.dtype)
        if k == 1:
            padded = x
        elif past is None:
            padded = bb.emit(op.nn.pad(x, [0, 0, 0, 0, k - 1, 0]))
        else:
            padded = bb.emit(op.concat([past, x], axis=2))
        # half inputs: conv + bias in float32, rounded once (as the reference and onnxruntime)
        acc = "float32" if dtype == "float16" else dtype
        y = bb.emit(op.nn.conv1d(padded, weight, groups=channels, out_dtype=acc))
        if bias is not None:
            y = bb.emit(op.add(y, op.reshape(op.astype(bias, acc), [1, channels, 1])))
        y = bb.emit(op.astype(y, dtype)) if acc != dtype else y
        if activation != "none":  # in float32 for half inputs, as the reference
            wide = bb.emit(op.astype(y, "float32")) if dtype == "float16" else y
            y = bb.emit(op.astype(op.multiply(wide, op.sigmoid(wide)), dtype))
        total = length + k - 1
        present = bb.emit(op.strided_slice(padded, [2], [total - (k - 1)], [total]))
        return relax.Tuple([y, present][: max(1, attr["tvm_custom"]["num_outputs"])])


CONVERTERS = (Converter("CausalConvWithState", CausalConvWithState, since=27),)
