"""ONNX Attention (opset 23): 3-D or 4-D Q/K/V, grouped KV heads, masks, causal, KV cache.

TVM 0.27 maps every node named "Attention" to its converter for Microsoft's contrib op (which
needs `num_heads`), so the standard op always failed to import; this replaces it for opset 23+.
Semantics follow onnx's reference implementation: Q and K^T each scaled by sqrt(scale);
softcap before the mask; a causal mask aligned to the end of the KV cache; boolean masks as
0/-inf; rows with every key masked give zeros; `softmax_precision` sets the softmax dtype;
half-precision inputs are computed in float32 and rounded once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


def _shape(x: Expr) -> list[int]:
    return [int(v) for v in x.ty.shape.values]


def _heads_first(bb: Any, x: Expr, heads: int) -> Expr:
    """[B, S, heads*D] → [B, heads, S, D]."""
    b, s, hidden = _shape(x)
    x = bb.emit(relax.op.reshape(x, [b, s, heads, hidden // heads]))
    return bb.emit(relax.op.permute_dims(x, [0, 2, 1, 3]))


class Attention(OnnxOpConverter):
    @classmethod
    def _impl_v23(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        q, k, v = inputs[0], inputs[1], inputs[2]
        mask = inputs[3] if len(inputs) > 3 else None
        past_k = inputs[4] if len(inputs) > 4 else None
        past_v = inputs[5] if len(inputs) > 5 else None
        nonpad = inputs[6] if len(inputs) > 6 else None  # opset 24: valid keys per batch row
        rank3 = len(_shape(q)) == 3
        if rank3:
            q = _heads_first(bb, q, int(attr["q_num_heads"]))
            k = _heads_first(bb, k, int(attr["kv_num_heads"]))
            v = _heads_first(bb, v, int(attr["kv_num_heads"]))
        dtype = str(q.ty.dtype)
        if past_k is not None:
            k = bb.emit(op.concat([past_k, k], axis=2))
        if past_v is not None:
            v = bb.emit(op.concat([past_v, v], axis=2))
        present_k, present_v = k, v
        io_dtype = dtype
        if dtype == "float16":  # computed in float32, rounded once (as onnxruntime)
            dtype = "float32"
            q, k, v = (bb.emit(op.astype(t, dtype)) for t in (q, k, v))
        q_heads, q_len, head = _shape(q)[1:]
        kv_heads, kv_len = _shape(k)[1:3]
        if q_heads != kv_heads:
            k = bb.emit(op.repeat(k, q_heads // kv_heads, axis=1))
            v = bb.emit(op.repeat(v, q_heads // kv_heads, axis=1))
        scale = attr.get("scale")
        root = relax.const(np.sqrt(scale if scale is not None else 1 / np.sqrt(head)), dtype)
        qk = bb.emit(
            op.matmul(op.multiply(q, root), op.permute_dims(op.multiply(k, root), [0, 1, 3, 2]))
        )
        softcap = float(attr.get("softcap", 0.0))
        if softcap > 0:
            cap = relax.const(softcap, dtype)
            qk = bb.emit(op.multiply(op.tanh(op.divide(qk, cap)), cap))
        causal = bool(attr.get("is_causal", 0))
        bias = cls._bias(bb, mask, causal, q_len, kv_len, dtype, past_k, nonpad)
        scores = bb.emit(op.add(qk, bias)) if bias is not None else qk
        precision = attr.get("softmax_precision")
        soft_dtype = (
            str(onnx.helper.tensor_dtype_to_np_dtype(int(precision))) if precision else dtype
        )
        probs = bb.emit(op.nn.softmax(op.astype(scores, soft_dtype), axis=-1))
        if bias is not None:  # rows with every key masked: zeros, not NaN
            masked = op.equal(op.max(bias, axis=-1, keepdims=True), relax.const(-np.inf, dtype))
            probs = bb.emit(op.where(masked, relax.const(0, soft_dtype), probs))
        probs = bb.emit(op.astype(probs, dtype)) if soft_dtype != dtype else probs
        y = bb.emit(op.matmul(probs, v))
        y = bb.emit(op.astype(y, io_dtype)) if io_dtype != dtype else y
        if rank3:
            y = bb.emit(op.permute_dims(y, [0, 2, 1, 3]))
            b, s = _shape(y)[:2]
            y = bb.emit(op.reshape(y, [b, s, -1]))
        mode = int(attr.get("qk_matmul_output_mode", 0))
        qk_out = {0: qk, 1: qk, 2: scores, 3: probs}[mode]  # as onnx's reference: 1 is 0
        if str(qk_out.ty.dtype) != io_dtype:
            qk_out = bb.emit(op.astype(qk_out, io_dtype))
        outputs = [y, present_k, present_v, qk_out]
        return relax.Tuple(outputs[: max(1, attr["tvm_custom"]["num_outputs"])])

    @staticmethod
    def _bias(
        bb: Any,
        mask: Expr | None,
        causal: bool,
        q_len: int,
        kv_len: int,
        dtype: str,
        past_k: Expr | None,
        nonpad: Expr | None = None,
    ) -> Expr | None:
        """The additive mask ([.., q_len, kv_len], 0 or -inf where booleans are False).

        With `nonpad_kv_seqlen` (a static cache holding nonpad[b] valid keys of batch row b)
        the keys past it are masked and the causal frontier of row b is nonpad[b] - q_len.
        """
        op = relax.op
        ninf = relax.const(-np.inf, dtype)
        bias = None
        if mask is not None:
            if str(mask.ty.dtype) == "bool":
                mask = bb.emit(op.where(mask, relax.const(0, dtype), ninf))
            elif str(mask.ty.dtype) != dtype:
                mask = bb.emit(op.astype(mask, dtype))
            pad = kv_len - _shape(mask)[-1]
            if pad > 0:
                widths = [0, 0] * (len(_shape(mask)) - 1) + [0, pad]
                mask = bb.emit(op.nn.pad(mask, widths, pad_value=-np.inf))
            bias = mask
        zero = relax.const(0, dtype)
        j = relax.const(np.arange(kv_len).reshape(1, 1, 1, kv_len).astype("int64"), "int64")
        valid = None
        if nonpad is not None:
            valid = bb.emit(op.reshape(bb.emit(op.astype(nonpad, "int64")), [-1, 1, 1, 1]))
        if causal and valid is not None and past_k is None:
            i = relax.const(np.arange(q_len).reshape(1, 1, q_len, 1).astype("int64"), "int64")
            frontier = op.add(i, op.subtract(valid, relax.const(q_len, "int64")))
            causal_bias = bb.emit(op.where(op.less_equal(j, frontier), zero, ninf))
            bias = causal_bias if bias is None else bb.emit(op.add(bias, causal_bias))
        elif causal:
            offset = _shape(past_k)[2] if past_k is not None else 0
            rows = np.arange(q_len)[:, None]
            cols = np.arange(kv_len)[None, :]
            allowed = np.where(cols <= rows + offset, 0, -np.inf).astype(dtype)
            causal_bias = relax.const(allowed)
            bias = causal_bias if bias is None else bb.emit(op.add(bias, causal_bias))
        if valid is not None:
            padding = bb.emit(op.where(op.less(j, valid), zero, ninf))
            bias = padding if bias is None else bb.emit(op.add(bias, padding))
        return bias


CONVERTERS = (Converter("Attention", Attention, since=23, replaces=True),)
