"""One TIR kernel runs a recurrent node's whole time loop, every direction.

Unrolled in Relax, a T-step sequence is T copies of the step: 3T VM calls per direction (the
step's slice of the input projection, the recurrence matmul, the gates) and a graph whose
size, fusion and kernel checks grow with T (plcmos-v2 took 820 s to compile). This kernel is
written once per shape: the time loop is a TIR loop, each step a matrix-vector product
(columns in register tiles of `TILE` floats, the previous hidden state broadcast) followed by
one vectorized pass over the hidden units that applies the gates and writes Y and the state
in place; a bidirectional node runs its reverse pass after the forward one in the same
kernel. The input projection of all steps and directions (X·W^T + Wb) stays one matmul in
Relax.

The kernel is already scheduled (`tirx.is_scheduled`): default rules and tuning leave it as
written. Weights reach it prepared at import (`pack_columns`): R transposed into column
tiles, each tile's rows contiguous, so every step streams them in order (2.6x faster than
strided rows for a 128-unit LSTM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PrimExpr = Any  # tvm.tirx.PrimExpr (TVM ships no type stubs)
Activation = Callable[[PrimExpr], PrimExpr]

TILE = 64  # columns of the recurrence matmul held in registers (4 AVX-512 / 8 AVX2 vectors)
LANES = 16  # hidden units per vector in the gates pass
KERNEL_ATTR = "tvmflow.recurrent"  # marks the kernels `on_one_gpu_thread` binds

# tanh(x) as Eigen's (and TVM's fast_tanh's) rational polynomial: vectorizes, where tanh
# would be one libm call per element. Inputs are clamped to [-9, 9], beyond which tanh
# rounds to +-1 in float32.
_TANH_P = (
    -2.76076847742355e-16,
    2.00018790482477e-13,
    -8.60467152213735e-11,
    5.12229709037114e-08,
    1.48572235717979e-05,
    6.37261928875436e-04,
    4.89352455891786e-03,
)
_TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def fast_tanh(x: PrimExpr, dtype: str) -> PrimExpr:
    from tvm import tirx

    if dtype != "float32":
        return tirx.tanh(x)

    def c(v: float) -> PrimExpr:
        return tirx.const(v, dtype)

    x = tirx.max(c(-9.0), tirx.min(c(9.0), x))
    x2 = x * x
    p = c(_TANH_P[0])
    for a in _TANH_P[1:]:
        p = p * x2 + c(a)
    q = c(_TANH_Q[0])
    for b in _TANH_Q[1:]:
        q = q * x2 + c(b)
    return x * p / q


def activation(name: str, alpha: float, beta: float, dtype: str) -> Activation:
    """An ONNX recurrent activation on a TIR value of `dtype` (sigmoid and tanh through
    `fast_tanh`)."""
    from tvm import tirx

    def c(_: PrimExpr, v: float) -> PrimExpr:
        return tirx.const(v, dtype)

    def tanh(x: PrimExpr) -> PrimExpr:
        return fast_tanh(x, dtype)

    table: dict[str, Activation] = {
        "relu": lambda x: tirx.max(x, c(x, 0.0)),
        "tanh": tanh,
        "sigmoid": lambda x: c(x, 0.5) + c(x, 0.5) * tanh(c(x, 0.5) * x),
        "softsign": lambda x: x / (tirx.abs(x) + c(x, 1.0)),
        "softplus": lambda x: tirx.log(tirx.exp(x) + c(x, 1.0)),
        "affine": lambda x: c(x, alpha) * x + c(x, beta),
        "leakyrelu": lambda x: tirx.Select(x < c(x, 0.0), c(x, alpha) * x, x),
        "thresholdedrelu": lambda x: tirx.Select(x > c(x, alpha), x, c(x, 0.0)),
        "scaledtanh": lambda x: c(x, alpha) * tanh(c(x, beta) * x),
        "hardsigmoid": lambda x: tirx.max(
            c(x, 0.0), tirx.min(c(x, 1.0), c(x, alpha) * x + c(x, beta))
        ),
        "elu": lambda x: tirx.Select(x < c(x, 0.0), c(x, alpha) * (tirx.exp(x) - c(x, 1.0)), x),
    }
    return table[name]


@dataclass(frozen=True)
class KernelSpec:
    """Everything that decides a recurrent node's kernel.

    `kind` is LSTM (states h, c; gates i, o, f, c), GRU (state h; gates z, r, h) or RNN
    (state h; one gate). `acts` holds each direction's activations (f, g[, h]).
    """

    kind: str
    steps: int
    batch: int
    hidden: int
    dtype: str
    directions: tuple[str, ...]  # ("forward",), ("reverse",) or ("forward", "reverse")
    acts: tuple[tuple[Activation, ...], ...]
    clip: float | None = None
    input_forget: bool = False  # LSTM: f = 1 - i
    linear_before_reset: bool = False  # GRU: r * (h·Rh^T + Rbh) instead of (r * h)·Rh^T + Rbh
    peepholes: bool = False  # LSTM
    rows: int = 1  # batch rows sharing each loaded tile of R (`register_rows`)

    @property
    def gates(self) -> int:
        return {"LSTM": 4, "GRU": 3, "RNN": 1}[self.kind]

    @property
    def compute_dtype(self) -> str:
        return "float64" if self.dtype == "float64" else "float32"

    @property
    def column_ranges(self) -> tuple[tuple[int, int], ...]:
        """The recurrence matmul's column ranges, (start, count) each, packed in `TILE`s.

        GRU without linear_before_reset multiplies r into h before the h gate's matmul: its
        matmul runs in two parts (z and r from h, then the h gate from r * h)."""
        width = self.gates * self.hidden
        if self.kind == "GRU" and not self.linear_before_reset:
            return ((0, 2 * self.hidden), (2 * self.hidden, self.hidden))
        return ((0, width),)

    @property
    def tiles(self) -> int:
        return sum(-(-count // TILE) for _, count in self.column_ranges)


def register_rows(target: Any) -> int:
    """Batch rows per register tile on `target` (None: unknown, 1): 4 where a TILE is 4
    vectors (AVX-512: 16 of its 32 registers hold accumulators), else 1 (on AVX2 a TILE is
    already 8 of its 16 registers; 4 rows spilled and ran 1.3x slower than 1 at batch 8)."""
    if target is None or target.kind.name != "llvm":
        return 1
    from tvmflow.schedules.cpu_common import vector_lanes

    return 4 if TILE // vector_lanes(target) <= 4 else 1


def pack_columns(rt: Any, ranges: tuple[tuple[int, int], ...]) -> Any:
    """[..., K, N] → [..., tiles, K, TILE] (numpy): each column range zero-padded to whole
    tiles, a tile's K rows contiguous, so the matmul streams its weights in order."""
    import numpy as np

    parts = []
    for start, count in ranges:
        cols = rt[..., start : start + count]
        pad = -count % TILE
        cols = np.pad(cols, [(0, 0)] * (cols.ndim - 1) + [(0, pad)])
        tiled = cols.reshape(*cols.shape[:-1], -1, TILE)  # [..., K, tiles, TILE]
        parts.append(np.moveaxis(tiled, -2, -3))
    return np.ascontiguousarray(np.concatenate(parts, axis=-3))


def scratch_shapes(spec: KernelSpec) -> tuple[tuple[int, ...], ...]:
    """Shapes of the kernel's scratch outputs (in `spec.compute_dtype`), after y, h and c."""
    ndir, width = len(spec.directions), spec.gates * spec.hidden
    return (
        (spec.batch, width),
        (ndir, spec.batch, spec.hidden),
        (spec.hidden,),
        (spec.hidden,),
    )


def recurrent_kernel(spec: KernelSpec) -> Any:
    """The PrimFunc (proj, rt, rb, h0, c0, lens, peep) -> (y, h, c) of a whole node.

    proj [T, B, D*G*H]: X·W^T + Wb of every step and direction; rt [D, tiles, H, TILE]: R
    transposed, `pack_columns`-ed; rb [D, tiles, TILE]: R's bias, packed alike; h0, c0
    [D, B, H]: initial states; lens [B] int32: steps per row (a row's later steps keep its
    state and write zeros to Y); peep [D, 3H]: LSTM peepholes. Outputs y [T, D, B, H] and
    the final states h, c [D, B, H] (ONNX's Y, Y_h, Y_c). c0, c and peep are [1] where the
    op has no such tensor. `scratch_shapes` are four more outputs the kernel works in (the
    recurrence matmul's result, GRU's r * h, the new h and c): outputs, not allocations of
    the kernel, so the graph's memory plan places them and GPU targets accept them.
    """
    from tvm import tirx
    from tvm.script import tirx as T

    steps, batch, hidden, dtype = spec.steps, spec.batch, spec.hidden, spec.dtype
    rows = min(spec.rows, batch)
    ndir, width, ct = len(spec.directions), spec.gates * spec.hidden, spec.compute_dtype
    lstm, gru, rnn = spec.kind == "LSTM", spec.kind == "GRU", spec.kind == "RNN"
    ranges, tiles = spec.column_ranges, spec.tiles
    split = len(ranges) == 2
    first = (0, -(-ranges[0][1] // TILE))  # each range's first tile in the packed weights
    partial = tuple(count % TILE for _, count in ranges)  # columns of its last, partial tile
    c_shape = (ndir, batch, hidden) if lstm else (1,)
    peep_shape = (ndir, 3 * hidden) if spec.peepholes else (1,)
    one = tirx.const(1.0, ct)

    def cast(x: PrimExpr) -> PrimExpr:
        """A value of a `dtype` buffer in the compute dtype."""
        return x if dtype == ct else tirx.Cast(ct, x)

    def clipped(x: PrimExpr) -> PrimExpr:
        if spec.clip is None:
            return x
        bound = tirx.const(spec.clip, ct)
        return tirx.max(-bound, tirx.min(bound, x))

    def act(d: int, which: int) -> Activation:
        return spec.acts[d][which]

    def time(d: int, step: PrimExpr) -> PrimExpr:
        return steps - 1 - step if spec.directions[d] == "reverse" else step

    def pre(proj: Any, acc: Any, d: int, t: Any, b: Any, j: Any, g: int) -> PrimExpr:
        """Gate g's input: the step's projection + the recurrence matmul (incl. biases)."""
        return cast(proj[t, b, d * width + g * hidden + j]) + acc[b, g * hidden + j]

    def peep(p: Any, d: int, g: int, j: Any, cell: PrimExpr) -> PrimExpr:
        return cast(p[d, g * hidden + j]) * cell if spec.peepholes else tirx.const(0.0, ct)

    def lstm_c(proj: Any, acc: Any, c: Any, p: Any, d: int, t: Any, b: Any, j: Any) -> PrimExpr:
        old = cast(c[d, b, j])
        i = act(d, 0)(clipped(pre(proj, acc, d, t, b, j, 0) + peep(p, d, 0, j, old)))
        if spec.input_forget:
            f = one - i
        else:
            f = act(d, 0)(clipped(pre(proj, acc, d, t, b, j, 2) + peep(p, d, 2, j, old)))
        return f * old + i * act(d, 1)(clipped(pre(proj, acc, d, t, b, j, 3)))

    def lstm_h(proj: Any, acc: Any, p: Any, cn: Any, d: int, t: Any, b: Any, j: Any) -> PrimExpr:
        new = cn[j]
        o = act(d, 0)(clipped(pre(proj, acc, d, t, b, j, 1) + peep(p, d, 1, j, new)))
        return o * act(d, 2)(new)

    def gru_r(proj: Any, acc: Any, d: int, t: Any, b: Any, j: Any) -> PrimExpr:
        return act(d, 0)(clipped(pre(proj, acc, d, t, b, j, 1)))

    def gru_h(proj: Any, acc: Any, h: Any, d: int, t: Any, b: Any, j: Any) -> PrimExpr:
        z = act(d, 0)(clipped(pre(proj, acc, d, t, b, j, 0)))
        recurrent = acc[b, 2 * hidden + j]
        if spec.linear_before_reset:
            recurrent = gru_r(proj, acc, d, t, b, j) * recurrent
        candidate = act(d, 1)(clipped(cast(proj[t, b, d * width + 2 * hidden + j]) + recurrent))
        return (one - z) * candidate + z * cast(h[d, b, j])

    def rnn_h(proj: Any, acc: Any, d: int, t: Any, b: Any, j: Any) -> PrimExpr:
        return act(d, 0)(clipped(pre(proj, acc, d, t, b, j, 0)))

    @T.macro
    def block(
        src: Any,
        d: int,
        rt: Any,
        rb: Any,
        acc: Any,
        tile: Any,
        r: int,
        jo: Any,
        b0: Any,
        nrows: int,
        cols: int,
    ) -> None:
        # acc[b0:b0+nrows, tile jo of range r] = rb + src[d, those rows] · rt[:, tile]:
        # nrows x TILE accumulators in registers, each weight load used nrows times; of a
        # last partial tile only the real `cols` columns are stored.
        for bb in T.unroll(nrows):
            for ji in T.vectorized(TILE):
                tile[bb, ji] = cast(rb[d, first[r] + jo, ji])
        for k in range(hidden):
            for bb in T.unroll(nrows):
                for ji in T.vectorized(TILE):
                    tile[bb, ji] = tile[bb, ji] + cast(src[d, b0 + bb, k]) * cast(
                        rt[d, first[r] + jo, k, ji]
                    )
        for bb in T.unroll(nrows):
            for ji in T.vectorized(cols):
                acc[b0 + bb, ranges[r][0] + jo * TILE + ji] = tile[bb, ji]

    @T.macro
    def row_block(
        src: Any, d: int, rt: Any, rb: Any, acc: Any, tile: Any, r: int, b0: Any, nrows: int
    ) -> None:
        # Batch rows b0 .. b0+nrows over column range r: whole tiles, then a partial one.
        for jo in range(ranges[r][1] // TILE):
            block(src, d, rt, rb, acc, tile, r, jo, b0, nrows, TILE)
        if partial[r] != 0:
            block(src, d, rt, rb, acc, tile, r, ranges[r][1] // TILE, b0, nrows, partial[r])

    @T.macro
    def matvec(src: Any, d: int, rt: Any, rb: Any, acc: Any, tile: Any, r: int) -> None:
        # acc[:, range r] = rb + src[d] · rt[:, range r], in blocks of rows x TILE.
        for bo in range(batch // rows):
            row_block(src, d, rt, rb, acc, tile, r, bo * rows, rows)
        if batch % rows != 0:
            row_block(src, d, rt, rb, acc, tile, r, batch // rows * rows, batch % rows)

    @T.macro
    def update(
        proj: Any,
        acc: Any,
        h: Any,
        c: Any,
        p: Any,
        lens: Any,
        y: Any,
        hn: Any,
        cn: Any,
        d: int,
        t: Any,
        b: Any,
        j: Any,
    ) -> None:
        # New states into hn / cn first (LSTM's h reads the new c), then committed where the
        # step is within the row's length.
        if lstm:
            cn[j] = lstm_c(proj, acc, c, p, d, t, b, j)
            hn[j] = lstm_h(proj, acc, p, cn, d, t, b, j)
        if gru:
            hn[j] = gru_h(proj, acc, h, d, t, b, j)
        if rnn:
            hn[j] = rnn_h(proj, acc, d, t, b, j)
        y[t, d, b, j] = T.Select(t < lens[b], T.Cast(dtype, hn[j]), T.Cast(dtype, 0.0))
        h[d, b, j] = T.Select(t < lens[b], T.Cast(dtype, hn[j]), h[d, b, j])
        if lstm:
            c[d, b, j] = T.Select(t < lens[b], T.Cast(dtype, cn[j]), c[d, b, j])

    @T.macro
    def direction(
        proj: Any,
        rt: Any,
        rb: Any,
        h: Any,
        c: Any,
        p: Any,
        lens: Any,
        y: Any,
        acc: Any,
        rh: Any,
        tile: Any,
        hn: Any,
        cn: Any,
        d: int,
    ) -> None:
        for step in range(steps):
            matvec(h, d, rt, rb, acc, tile, 0)
            if split:
                for b, j in T.grid(batch, hidden):
                    rh[d, b, j] = gru_r(proj, acc, d, time(d, step), b, j) * cast(h[d, b, j])
                matvec(rh, d, rt, rb, acc, tile, 1)
            for b in range(batch):
                for jo in range(hidden // LANES):
                    for ji in T.vectorized(LANES):
                        update(
                            proj,
                            acc,
                            h,
                            c,
                            p,
                            lens,
                            y,
                            hn,
                            cn,
                            d,
                            time(d, step),
                            b,
                            jo * LANES + ji,
                        )
                if hidden % LANES != 0:
                    for j in range(hidden // LANES * LANES, hidden):
                        update(proj, acc, h, c, p, lens, y, hn, cn, d, time(d, step), b, j)

    @T.prim_func(s_tir=True)
    def kernel(
        proj: T.Buffer((steps, batch, ndir * width), dtype),  # type: ignore[valid-type]
        rt: T.Buffer((ndir, tiles, hidden, TILE), dtype),  # type: ignore[valid-type]
        rb: T.Buffer((ndir, tiles, TILE), dtype),  # type: ignore[valid-type]
        h0: T.Buffer((ndir, batch, hidden), dtype),  # type: ignore[valid-type]
        c0: T.Buffer(c_shape, dtype),  # type: ignore[valid-type]
        lens: T.Buffer((batch,), "int32"),  # type: ignore[valid-type]
        p: T.Buffer(peep_shape, dtype),  # type: ignore[valid-type]
        y: T.Buffer((steps, ndir, batch, hidden), dtype),  # type: ignore[valid-type]
        h: T.Buffer((ndir, batch, hidden), dtype),  # type: ignore[valid-type]
        c: T.Buffer(c_shape, dtype),  # type: ignore[valid-type]
        acc: T.Buffer((batch, width), ct),  # type: ignore[valid-type]
        rh: T.Buffer((ndir, batch, hidden), ct),  # type: ignore[valid-type]
        hn: T.Buffer((hidden,), ct),  # type: ignore[valid-type]
        cn: T.Buffer((hidden,), ct),  # type: ignore[valid-type]
    ) -> None:
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, KERNEL_ATTR: True})
        tile = T.alloc_buffer((rows, TILE), ct, scope="local")
        for d, b, j in T.grid(ndir, batch, hidden):
            h[d, b, j] = h0[d, b, j]
        if lstm:
            for d, b, j in T.grid(ndir, batch, hidden):
                c[d, b, j] = c0[d, b, j]
        direction(proj, rt, rb, h, c, p, lens, y, acc, rh, tile, hn, cn, 0)
        if ndir == 2:
            direction(proj, rt, rb, h, c, p, lens, y, acc, rh, tile, hn, cn, 1)

    return kernel.without_attr("global_symbol")  # the module names it (bb.add_func)


def on_one_gpu_thread() -> Any:
    """GPU targets: each recurrent kernel runs as one GPU thread, its loops serial.

    The kernel is written for CPUs; left unbound on a GPU target it would be built as host
    code reading device memory. One thread is correct, not fast (CPU targets are the goal).
    """
    import tvm
    from tvm import tirx

    def serial(stmt: Any) -> Any:
        """The kernel's loops (sequences of loops and stores) with vectorized ones serial."""
        if isinstance(stmt, tirx.SeqStmt):
            return tirx.SeqStmt([serial(s) for s in stmt.seq])
        if isinstance(stmt, tirx.For):
            kind = tirx.ForKind.SERIAL if stmt.kind == tirx.ForKind.VECTORIZED else stmt.kind
            return tirx.For(stmt.loop_var, stmt.min, stmt.extent, kind, serial(stmt.body))
        return stmt

    def one_thread(func: Any) -> Any:
        body = serial(func.body)
        for tag in ("threadIdx.x", "blockIdx.x"):
            var = tirx.Var(tag.split(".")[0], "int32")
            bound = tirx.IterVar(tvm.ir.Range(0, 1), var, tirx.IterVar.ThreadIndex, tag)
            body = tirx.For(var, 0, 1, tirx.ForKind.THREAD_BINDING, body, thread_binding=bound)
        return func.with_body(body)

    @tvm.transform.module_pass(opt_level=0, name="RecurrentOnOneGpuThread")
    def transform(mod: Any, _ctx: Any) -> Any:
        out = mod.clone()
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and func.attrs and KERNEL_ATTR in func.attrs:
                out[gv] = one_thread(func)
        return out

    return transform
