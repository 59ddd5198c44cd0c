"""What ONNX's recurrent ops (RNN, GRU, LSTM) share: attributes, activations and the time loop.

The input projection of all time steps and directions is one matmul in Relax; the time loop
is one TIR kernel per node (`tvmflow.ops.recurrent_kernel`), which reads that projection and
writes Y, Y_h and Y_c in ONNX's layout. With `sequence_lens`, steps past a batch row's length
keep its state and write zeros to `Y`; a reverse pass walks t = T-1 .. 0, so each row's first
real step is its own last element. Semantics follow the ONNX spec and onnxruntime (activation
alpha/beta consumed in order by the activations that take them; `clip` bounds every gate's
input to its activation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from tvmflow.ops.recurrent_kernel import (
    TILE,
    Activation,
    KernelSpec,
    activation,
    pack_columns,
    recurrent_kernel,
    register_rows,
    scratch_shapes,
)

Expr = Any  # relax.Expr (TVM ships no type stubs)

# name → (default alpha, default beta); None: the activation takes no such parameter.
_PARAMS: dict[str, tuple[float | None, float | None]] = {
    "relu": (None, None),
    "tanh": (None, None),
    "sigmoid": (None, None),
    "softsign": (None, None),
    "softplus": (None, None),
    "affine": (1.0, 0.0),
    "leakyrelu": (0.01, None),
    "thresholdedrelu": (1.0, None),
    "scaledtanh": (1.0, 1.0),
    "hardsigmoid": (0.2, 0.5),
    "elu": (1.0, None),
}


def activations(
    attr: dict[str, Any], defaults: Sequence[str], num_directions: int, dtype: str
) -> tuple[tuple[Activation, ...], ...]:
    """Per direction, the op's activation functions (f, g[, h]) from the node attributes,
    on TIR values of `dtype`."""
    names = [_str(n).lower() for n in attr.get("activations", ())] or list(defaults)
    if len(names) == len(defaults) and num_directions == 2:
        names = names * 2
    if len(names) != len(defaults) * num_directions:
        raise ValueError(f"expected {len(defaults) * num_directions} activations, got {names}")
    alphas = list(attr.get("activation_alpha", ()))
    betas = list(attr.get("activation_beta", ()))
    fns = []
    for name in names:
        if name not in _PARAMS:
            raise ValueError(f"unsupported recurrent activation {name!r}")
        alpha, beta = _PARAMS[name]
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        fns.append(activation(name, float(alpha or 0.0), float(beta or 0.0), dtype))
    n = len(defaults)
    return tuple(tuple(fns[d * n : (d + 1) * n]) for d in range(num_directions))


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def static_shape(expr: Expr, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in expr.ty.shape.values)
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"recurrent op needs a static shape for {what}") from exc


@dataclass(frozen=True)
class Recurrent:
    """A recurrent node's inputs, normalized to layout 0 ([T, B, ...]), and its kernel's spec
    (activations still to be filled in by the op)."""

    bb: Any
    x: Expr  # [T, B, I]
    w: Expr  # [D, G*H, I]
    r: Expr  # [D, G*H, H]
    b: Expr | None  # [D, 2*G*H]
    seq_lens: Expr | None  # [B] int
    initial: tuple[Expr | None, ...]  # each [D, B, H]
    layout: int
    spec: KernelSpec

    def emit(self, expr: Expr) -> Expr:
        return self.bb.emit(expr)


def parse(
    bb: Any, inputs: Sequence[Any], attr: dict[str, Any], kind: str, num_states: int
) -> Recurrent:
    """Read the common inputs (X, W, R, B, sequence_lens, initial states) and attributes."""
    x, w, r = inputs[0], inputs[1], inputs[2]
    b = inputs[3] if len(inputs) > 3 else None
    seq_lens = inputs[4] if len(inputs) > 4 else None
    initial = tuple(inputs[5 + i] if len(inputs) > 5 + i else None for i in range(num_states))
    layout = int(attr.get("layout", 0))
    if layout == 1:  # [B, T, I] → [T, B, I]; states [B, D, H] → [D, B, H]
        x = bb.emit(relax.op.permute_dims(x, [1, 0, 2]))
        initial = tuple(
            None if s is None else bb.emit(relax.op.permute_dims(s, [1, 0, 2])) for s in initial
        )
    direction = _str(attr.get("direction", "forward"))
    directions = {
        "forward": ("forward",),
        "reverse": ("reverse",),
        "bidirectional": ("forward", "reverse"),
    }[direction]
    hidden = int(attr["hidden_size"]) if "hidden_size" in attr else static_shape(r, "R")[2]
    clip = attr.get("clip")
    steps, batch = static_shape(x, "X")[:2]
    spec = KernelSpec(
        kind=kind,
        steps=steps,
        batch=batch,
        hidden=hidden,
        dtype=str(x.ty.dtype),
        directions=directions,
        acts=(),
        clip=None if clip is None else float(clip),
        rows=register_rows(tvm.target.Target.current(allow_none=True)),
    )
    return Recurrent(bb, x, w, r, b, seq_lens, initial, layout, spec)


def run(rec: Recurrent, spec: KernelSpec, peepholes: Expr | None = None) -> list[Expr]:
    """The node's outputs [Y, Y_h(, Y_c)]: the input projection (one matmul), then one call of
    the node's kernel."""
    op = relax.op
    width = spec.gates * spec.hidden
    ndir = len(spec.directions)
    ranges = spec.column_ranges

    def w_t(w: np.ndarray) -> np.ndarray:  # [D, G*H, I] -> [I, D*G*H]
        return np.concatenate(list(w.transpose(0, 2, 1)), axis=-1)

    proj = rec.emit(op.matmul(rec.x, _prepared(rec, rec.w, w_t)))  # [T, B, D*G*H]: all steps
    if rec.b is not None:
        proj = rec.emit(op.add(proj, _prepared(rec, rec.b, lambda b: b[:, :width].reshape(-1))))
    rt = _prepared(rec, rec.r, lambda r: pack_columns(r.transpose(0, 2, 1), ranges))
    if rec.b is None:
        rb = relax.const(np.zeros((ndir, spec.tiles, TILE), spec.dtype))
    else:
        rb = _prepared(rec, rec.b, lambda b: pack_columns(b[:, None, width:], ranges)[:, :, 0])
    states = (ndir, spec.batch, spec.hidden)
    none = relax.const(np.zeros(1, spec.dtype))  # for the kernel's c0 / peep an op lacks
    h0 = _initial(rec.initial[0], states, spec.dtype)
    c0 = _initial(rec.initial[1], states, spec.dtype) if spec.kind == "LSTM" else none
    if rec.seq_lens is None:
        lens = relax.const(np.full(spec.batch, spec.steps, "int32"))
    else:
        lens = rec.emit(op.astype(rec.seq_lens, "int32"))
    peep = none if peepholes is None else peepholes
    kernel = rec.bb.add_func(recurrent_kernel(spec), f"{spec.kind.lower()}_sequence")
    c_shape = states if spec.kind == "LSTM" else (1,)
    out = rec.emit(
        relax.call_tir(
            kernel,
            relax.Tuple([proj, rt, rb, h0, c0, lens, peep]),
            [
                relax.TensorType((spec.steps, *states), spec.dtype),
                relax.TensorType(states, spec.dtype),
                relax.TensorType(c_shape, spec.dtype),
                *(relax.TensorType(s, spec.compute_dtype) for s in scratch_shapes(spec)),
            ],
        )
    )
    results = [rec.emit(relax.TupleGetItem(out, i)) for i in range(3 if spec.kind == "LSTM" else 2)]
    if rec.layout == 1:
        results[0] = rec.emit(op.permute_dims(results[0], [2, 0, 1, 3]))
        results[1:] = [rec.emit(op.permute_dims(s, [1, 0, 2])) for s in results[1:]]
    return results


def _prepared(rec: Recurrent, tensor: Expr, transform: Any) -> Expr:
    """`transform` (a numpy rearrangement that may zero-pad) of a weight tensor.

    It runs on an index array, so one function serves both cases: constants (every real
    model) are rearranged here at import, anything else is gathered by a `take` in the graph.
    """
    shape = static_shape(tensor, "a weight")
    index = transform(np.arange(1, int(np.prod(shape)) + 1).reshape(shape))  # 0: padding
    if isinstance(tensor, tvm.ir.GenericConst):
        flat = tensor.value.numpy().reshape(-1)
        return relax.const(np.concatenate([np.zeros(1, flat.dtype), flat])[index])
    op = relax.op
    dtype = str(tensor.ty.dtype)
    flat = rec.emit(op.concat([op.zeros((1,), dtype), op.reshape(tensor, (-1,))], axis=0))
    return rec.emit(op.take(flat, relax.const(index.astype("int64")), axis=0))


def _initial(state: Expr | None, shape: tuple[int, ...], dtype: str) -> Expr:
    return relax.const(np.zeros(shape, dtype)) if state is None else state
