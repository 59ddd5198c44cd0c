"""ONNX LinearAttention (opset 27): linear, gated, delta and gated-delta recurrences with GQA.

Packed (B, T, H*D) query/key/value, optional (B, H_kv, d_k, d_v) state, all in float32 as
onnx's reference. The delta rules (and every decode step, T = 1) run the recurrence one token
at a time (decay, delta correction, rank-1 write, read), unrolled over the static sequence
length, so a long delta-rule prefill makes a graph that grows with T. The linear and gated
rules need no recurrence: a prefill is one causal-masked closed form (`_parallel`; a gated
T = 64 prefill compiles in 7 s instead of 64 s unrolled). Query heads read their KV head's
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


def _heads(bb: Any, x: Expr, heads: int) -> Expr:
    """(B, T, heads*D) → (B, heads, T, D) in float32."""
    b, t, hidden = _shape(x)
    x = relax.op.astype(relax.op.reshape(x, [b, t, heads, hidden // heads]), "float32")
    return bb.emit(relax.op.permute_dims(x, [0, 2, 1, 3]))


def _parallel(
    bb: Any,
    query: Expr,
    key: Expr,
    value: Expr,
    decay: Expr | None,
    state: Expr,
    kv_heads: int,
) -> tuple[Expr, Expr]:
    """The linear and gated rules in closed form (no recurrence): with G the running sum of
    the log decays, o_t = q_t·(e^{G_t} S_0) + Σ_{s≤t} (q_t ⊙ k_s · e^{G_t - G_s}) v_s and
    S_T = e^{G_T} S_0 + Σ_s (k_s e^{G_T - G_s}) v_sᵀ. The exponents are masked to -inf above
    the diagonal before `exp`, so they never overflow. Output (B, T, H_kv, group, d_v)."""
    op = relax.op
    b, t, q_hidden = _shape(query)
    q = _heads(bb, query, kv_heads)  # (B, H, T, group*dk): a KV head's query heads
    k = _heads(bb, key, kv_heads)  # (B, H, T, dk)
    v = _heads(bb, value, kv_heads)  # (B, H, T, dv)
    d_k = _shape(k)[3]
    group = q_hidden // d_k // kv_heads
    q = bb.emit(op.reshape(q, [b, kv_heads, t, group, d_k]))  # (B, H, T, group, dk)
    q = bb.emit(op.permute_dims(q, [0, 1, 3, 2, 4]))  # (B, H, group, T, dk)
    below = np.tril(np.ones((t, t), bool))
    if decay is None:  # linear: no decay
        scores = op.matmul(q, op.expand_dims(op.permute_dims(k, [0, 1, 3, 2]), 2))
        weights = relax.const(below.astype("float32"))
        inner = bb.emit(op.multiply(scores, weights))  # (B, H, group, T, T)
        intra = op.matmul(inner, op.expand_dims(v, 2))
        inter = op.matmul(q, op.expand_dims(state, 2))
        y = bb.emit(op.add(intra, inter))
        final = bb.emit(op.add(state, op.matmul(op.permute_dims(k, [0, 1, 3, 2]), v)))
    else:
        g = bb.emit(op.cumsum(_heads(bb, decay, kv_heads), axis=2))  # (B, H, T, 1 or dk)
        width = _shape(g)[3]
        diff = op.subtract(op.expand_dims(g, 3), op.expand_dims(g, 2))  # (B, H, T, T, X)
        mask = relax.const(below.reshape(1, 1, t, t, 1))
        ninf = relax.const(-np.inf, "float32")
        gate = bb.emit(op.exp(op.where(mask, diff, ninf)))  # e^{G_t - G_s}, 0 above
        if width == 1:
            scores = op.matmul(q, op.expand_dims(op.permute_dims(k, [0, 1, 3, 2]), 2))
            inner = op.multiply(scores, op.expand_dims(op.squeeze(gate, [4]), 2))
        else:  # Σ_d q_td k_sd e^{G_td - G_sd}
            qk = op.multiply(op.expand_dims(q, 4), op.expand_dims(op.expand_dims(k, 2), 3))
            inner = op.sum(op.multiply(qk, op.expand_dims(gate, 2)), axis=5)
        inner = bb.emit(inner)  # (B, H, group, T, T)
        intra = op.matmul(inner, op.expand_dims(v, 2))
        lead = op.expand_dims(op.exp(g), 2)  # (B, H, 1, T, X): e^{G_t}
        inter = op.matmul(op.multiply(q, lead), op.expand_dims(state, 2))
        y = bb.emit(op.add(intra, inter))
        last = op.strided_slice(g, [2], [t - 1], [t])  # (B, H, 1, X)
        to_end = op.exp(op.subtract(last, g))  # (B, H, T, X): e^{G_T - G_s}
        carried = op.matmul(op.permute_dims(op.multiply(k, to_end), [0, 1, 3, 2]), v)
        rows = op.permute_dims(op.exp(last), [0, 1, 3, 2])  # (B, H, X, 1)
        final = bb.emit(op.add(op.multiply(state, rows), carried))
    y = bb.emit(op.permute_dims(y, [0, 3, 1, 2, 4]))  # (B, T, H, group, dv)
    return y, final


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
        state = (
            bb.emit(op.astype(past, "float32"))
            if past is not None
            else relax.const(np.zeros((b, kv_heads, d_k, d_v), np.float32))
        )
        present_dtype = str((past if past is not None else query).ty.dtype)
        if rule in ("linear", "gated") and t > 1:
            y, state = _parallel(bb, query, key, value, decay, state, kv_heads)
            y = op.multiply(op.reshape(y, [b, t, q_heads * d_v]), relax.const(scale, "float32"))
            y = bb.emit(op.astype(y, str(query.ty.dtype)))
            outs = [y, bb.emit(op.astype(state, present_dtype))]
            return relax.Tuple(outs[: max(1, attr["tvm_custom"]["num_outputs"])])
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
        present = op.astype(state, present_dtype)
        return relax.Tuple([y, bb.emit(present)][: max(1, attr["tvm_custom"]["num_outputs"])])


CONVERTERS = (Converter("LinearAttention", LinearAttention, since=27),)
