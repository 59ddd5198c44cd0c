"""What ONNX's recurrent ops (RNN, GRU, LSTM) share: attributes, activations and the time loop.

The sequence is unrolled in Relax (tvmflow compiles static shapes only): the input projection
of all time steps is one matmul, then each step is one small matmul with the recurrence weights
plus the cell's elementwise gates, which FuseOps merges into one kernel per step. With
`sequence_lens`, steps past a batch row's length keep its state and write zeros to `Y`; a
reverse pass walks t = T-1 .. 0, so each row's first real step is its own last element.
Semantics follow the ONNX spec and onnxruntime (activation alpha/beta consumed in order by the
activations that take them; `clip` bounds every gate's input to its activation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax

Expr = Any  # relax.Expr (TVM ships no type stubs)
Activation = Callable[[Expr], Expr]

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


def _activation(name: str, alpha: float | None, beta: float | None, dtype: str) -> Activation:
    op = relax.op

    def c(v: float | None) -> Expr:
        return relax.const(float(v or 0.0), dtype)

    table: dict[str, Activation] = {
        "relu": op.nn.relu,
        "tanh": op.tanh,
        "sigmoid": op.sigmoid,
        "softsign": lambda x: op.divide(x, op.add(op.abs(x), c(1.0))),
        "softplus": lambda x: op.log(op.add(op.exp(x), c(1.0))),
        "affine": lambda x: op.add(op.multiply(c(alpha), x), c(beta)),
        "leakyrelu": lambda x: op.where(op.less(x, c(0.0)), op.multiply(c(alpha), x), x),
        "thresholdedrelu": lambda x: op.where(op.greater(x, c(alpha)), x, c(0.0)),
        "scaledtanh": lambda x: op.multiply(c(alpha), op.tanh(op.multiply(c(beta), x))),
        "hardsigmoid": lambda x: op.clip(op.add(op.multiply(c(alpha), x), c(beta)), 0.0, 1.0),
        "elu": lambda x: op.where(
            op.less(x, c(0.0)), op.multiply(c(alpha), op.subtract(op.exp(x), c(1.0))), x
        ),
    }
    return table[name]


def activations(
    attr: dict[str, Any], defaults: Sequence[str], num_directions: int, dtype: str
) -> list[list[Activation]]:
    """Per direction, the op's activation functions (f, g[, h]) from the node attributes."""
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
        fns.append(_activation(name, alpha, beta, dtype))
    n = len(defaults)
    return [fns[d * n : (d + 1) * n] for d in range(num_directions)]


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def static_shape(expr: Expr, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in expr.ty.shape.values)
    except (AttributeError, TypeError) as exc:
        raise ValueError(f"recurrent op needs a static shape for {what}") from exc


@dataclass(frozen=True)
class Recurrent:
    """A recurrent node's attributes and inputs, normalized to layout 0 ([T, B, ...])."""

    bb: Any
    x: Expr  # [T, B, I]
    w: Expr  # [D, G*H, I]
    r: Expr  # [D, G*H, H]
    b: Expr | None  # [D, 2*G*H]
    seq_lens: Expr | None  # [B] int
    initial: tuple[Expr | None, ...]  # each [D, B, H]
    hidden: int
    directions: tuple[str, ...]
    layout: int
    clip: float | None
    dtype: str
    memo: dict[tuple[Any, ...], Expr] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return static_shape(self.x, "X")[0]

    @property
    def batch(self) -> int:
        return static_shape(self.x, "X")[1]

    def emit(self, expr: Expr) -> Expr:
        return self.bb.emit(expr)

    def clipped(self, x: Expr) -> Expr:
        if self.clip is None:
            return x
        return self.emit(relax.op.clip(x, -self.clip, self.clip))

    def direction(self, tensor: Expr, d: int) -> Expr:
        return self.emit(relax.op.take(tensor, relax.const(d, "int64"), axis=0))

    def weight(self, tensor: Expr, d: int, start: int, stop: int, transpose: bool = False) -> Expr:
        """tensor[d, start:stop] (transposed), prepared once: every time step reuses it.

        Constant weights are sliced in numpy; preparing them per step made FoldConstant build
        and run a kernel for each (20 s for a 20-step LSTM).
        """
        key = (id(tensor), d, start, stop, transpose)
        if key not in self.memo:
            if isinstance(tensor, tvm.ir.GenericConst):
                value = tensor.value.numpy()[d, start:stop]
                self.memo[key] = relax.const(np.ascontiguousarray(value.T if transpose else value))
            else:
                value = relax.op.strided_slice(self.direction(tensor, d), [0], [start], [stop])
                if transpose:
                    value = relax.op.permute_dims(value, [1, 0])
                self.memo[key] = self.emit(value)
        return self.memo[key]

    def state(self, index: int, d: int) -> Expr:
        init = self.initial[index] if index < len(self.initial) else None
        if init is None:
            return relax.op.zeros((self.batch, self.hidden), self.dtype)
        return self.direction(init, d)


def parse(bb: Any, inputs: Sequence[Any], attr: dict[str, Any], num_states: int) -> Recurrent:
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
    return Recurrent(
        bb=bb,
        x=x,
        w=w,
        r=r,
        b=b,
        seq_lens=seq_lens,
        initial=initial,
        hidden=hidden,
        directions=directions,
        layout=layout,
        clip=None if clip is None else float(clip),
        dtype=str(x.ty.dtype),
    )


# A cell: (step input projection [B, G*H] incl. W bias, states, direction index) → new states;
# the first state is the hidden state H that goes to Y.
Cell = Callable[[Expr, list[Expr], int], list[Expr]]


def run(rec: Recurrent, num_states: int, cell: Cell) -> list[Expr]:
    """Unroll every direction; returns [Y, final state 0 (Y_h), final state 1 (Y_c), ...]."""
    op = relax.op
    ys, finals = [], []
    for d, direction in enumerate(rec.directions):
        gates = static_shape(rec.w, "W")[1]  # G*H
        w_t = rec.weight(rec.w, d, 0, gates, transpose=True)  # [I, G*H]
        proj = rec.emit(op.matmul(rec.x, w_t))  # [T, B, G*H]: every step's input projection
        if rec.b is not None:
            proj = rec.emit(op.add(proj, rec.weight(rec.b, d, 0, gates)))
        states = [rec.state(i, d) for i in range(num_states)]
        order = range(rec.steps) if direction == "forward" else reversed(range(rec.steps))
        outputs: dict[int, Expr] = {}
        for t in order:
            new = cell(rec.direction(proj, t), states, d)
            if rec.seq_lens is None:
                states, outputs[t] = new, new[0]
                continue
            valid = rec.emit(
                op.expand_dims(op.less(relax.const(t, str(rec.seq_lens.ty.dtype)), rec.seq_lens), 1)
            )
            states = [rec.emit(op.where(valid, n, s)) for n, s in zip(new, states, strict=True)]
            zero = relax.const(0.0, rec.dtype)
            outputs[t] = rec.emit(op.where(valid, new[0], zero))
        ys.append(rec.emit(stack([outputs[t] for t in range(rec.steps)], axis=0)))
        finals.append(states)
    y = rec.emit(stack(ys, axis=1))  # [T, D, B, H]
    results = [rec.emit(stack([f[i] for f in finals], axis=0)) for i in range(num_states)]
    if rec.layout == 1:
        y = rec.emit(op.permute_dims(y, [2, 0, 1, 3]))
        results = [rec.emit(op.permute_dims(s, [1, 0, 2])) for s in results]
    return [y, *results]


def stack(values: Sequence[Expr], axis: int) -> Expr:
    """relax.op.stack as expand_dims + concat: TVM 0.27's ConvertLayout crashes on stack."""
    return relax.op.concat([relax.op.expand_dims(v, axis) for v in values], axis=axis)


def recurrence(rec: Recurrent, h: Expr, d: int, first: int = 0, count: int | None = None) -> Expr:
    """H · R^T + R bias for direction d over gates first..first+count: [B, count*H]."""
    op = relax.op
    size = rec.hidden
    total = static_shape(rec.w, "W")[1] // size  # G: gates per direction
    count = total - first if count is None else count
    r_t = rec.weight(rec.r, d, first * size, (first + count) * size, transpose=True)
    out = rec.emit(op.matmul(h, r_t))
    if rec.b is not None:
        start = (total + first) * size
        out = rec.emit(op.add(out, rec.weight(rec.b, d, start, start + count * size)))
    return out


def gate(x: Expr, index: int, hidden: int) -> Expr:
    """Gate `index` ([B, H]) of a gate-stacked tensor [B, G*H]."""
    return relax.op.strided_slice(x, [1], [index * hidden], [(index + 1) * hidden])
