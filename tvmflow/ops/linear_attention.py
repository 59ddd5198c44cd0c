"""ONNX LinearAttention (opset 27): linear, gated, delta and gated-delta recurrences with GQA.

Packed (B, T, H*D) query/key/value, optional (B, H_kv, d_k, d_v) state. As onnx's reference,
the recurrence runs in float32 one token at a time (decay, delta correction, rank-1 write,
read), unrolled over the static sequence length: decode steps (T = 1) are a handful of small
matmuls; a long prefill makes a graph that grows with T. Query heads read their KV head's
state by grouping (head h uses KV head h // (H_q / H_kv)), so the state is never repeated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any
RULES = ("linear", "gated", "delta", "gated_delta")


def _shape(x: Expr) -> list[int]:
    return [int(v) for v in x.ty.shape.values]


def _per_token(bb: Any, x: Expr, heads: int, axes: list[int]) -> list[Expr]:
    """(B, T, heads*D) in float32, as (B, heads, T, D) permuted by `axes`, split per token."""
    b, t, hidden = _shape(x)
    x = relax.op.astype(relax.op.reshape(x, [b, t, heads, hidden // heads]), "float32")
    x = bb.emit(relax.op.permute_dims(x, axes))
    axis = axes.index(1)
    if t == 1:
        return [x]
    parts = bb.emit(relax.op.split(x, t, axis=axis))
    return [bb.emit(relax.TupleGetItem(parts, i)) for i in range(t)]


class LinearAttention(OnnxOpConverter):
    @classmethod
    def _impl_v27(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        query, key, value = inputs[0], inputs[1], inputs[2]
        past, decay, beta = (inputs[i] if len(inputs) > i else None for i in (3, 4, 5))
        rule = attr.get("update_rule", b"gated_delta")
        rule = rule.decode() if isinstance(rule, bytes) else str(rule)
        if rule not in RULES:
            raise ValueError(f"LinearAttention: update_rule {rule!r} is not one of {RULES}")
        q_heads, kv_heads = int(attr["q_num_heads"]), int(attr["kv_num_heads"])
        b, t, q_hidden = _shape(query)
        d_k, d_v = q_hidden // q_heads, _shape(value)[2] // kv_heads
        group = q_heads // kv_heads
        scale = float(attr.get("scale", 0.0)) or 1.0 / float(np.sqrt(d_k))
        bhtd = [0, 2, 1, 3]
        qs = _per_token(bb, query, kv_heads, bhtd)  # (B, H_kv, 1, group*d_k) per token
        ks = _per_token(bb, key, kv_heads, [0, 2, 3, 1])  # (B, H_kv, d_k, 1): k_t as a column
        vs = _per_token(bb, value, kv_heads, bhtd)  # (B, H_kv, 1, d_v)
        gates = None
        if rule in ("gated", "gated_delta"):
            gates = [
                bb.emit(op.exp(g)) for g in _per_token(bb, decay, kv_heads, [0, 2, 3, 1])
            ]  # (B, H_kv, d_k or 1, 1): scales the state's rows
        betas = None
        if rule in ("delta", "gated_delta"):
            betas = _per_token(bb, beta, _shape(beta)[2], bhtd)  # (B, H_kv or 1, 1, 1)
        state = (
            bb.emit(op.astype(past, "float32"))
            if past is not None
            else relax.const(np.zeros((b, kv_heads, d_k, d_v), np.float32))
        )
        outputs = []
        for i in range(t):
            if gates is not None:
                state = bb.emit(op.multiply(state, gates[i]))
            v_t = vs[i]
            if betas is not None:  # v_t ← β_t (v_t − Sᵀ k_t)
                retrieved = op.matmul(op.permute_dims(ks[i], [0, 1, 3, 2]), state)
                v_t = bb.emit(op.multiply(betas[i], op.subtract(v_t, retrieved)))
            state = bb.emit(op.add(state, op.matmul(ks[i], v_t)))
            q_t = op.reshape(qs[i], [b, kv_heads, group, d_k])  # the query heads of a KV head
            outputs.append(bb.emit(op.matmul(q_t, state)))  # (B, H_kv, group, d_v)
        y = bb.emit(op.stack(outputs, axis=1))  # (B, T, H_kv, group, d_v)
        y = op.multiply(op.reshape(y, [b, t, q_heads * d_v]), relax.const(scale, "float32"))
        y = bb.emit(op.astype(y, str(query.ty.dtype)))
        present = op.astype(state, str((past if past is not None else query).ty.dtype))
        return relax.Tuple([y, bb.emit(present)][: max(1, attr["tvm_custom"]["num_outputs"])])


CONVERTERS = (Converter("LinearAttention", LinearAttention, since=27),)
