"""Lowering pass: 3x3 stride-1 conv2d as Winograd F(m, 3): input transform, batched GEMM,
output transform (three kernels the `cpu_winograd` rules schedule).

A direct 3x3 conv spends 9 multiply-adds per output per input channel; F(4, 3) computes a
4x4 output tile from a 6x6 input tile with 36 multiply-adds per channel pair, i.e. 2.25, and
moves the rest into per-tile transforms that cost O(channels), not O(channels^2):

  V[e, p, c] = B^T d B   (input tile d of channel c, tile p; e = (a, b) over alpha x alpha)
  M[e, p, k] = sum_c V[e, p, c] * U[e, c, k]   (36 independent GEMMs, U = G w G^T)
  Y[n, k, h, w] = A^T M A  (4x4 output tile; bias / relu / residual add fuse into it)

U is computed here, in float64, from the constant weight and replaces it (the artifact's
weights file holds U only). The transforms are written as plain injective expressions with
the matrices' nonzero coefficients spelled out per tile position (a branch over the
position that the rules' unrolling folds to one), so no multiply by a zero reaches
the generated code. The kernels are marked out-elementwise-fusable (op_pattern 4): FuseOps
then fuses the bias / activation / residual add into the output transform but never a
neighbouring layer's transform into another (inlining one into the other recomputes it).

Which convs and which F(m, 3): `choose_tile`, the cost rule measured with
scripts/winograd-costs. Float32 only. Winograd adds fp32 rounding (the transforms scale
values up and down by their matrices' entries); verification against onnxruntime stays on
and passes on the models tested (tests/test_winograd.py, the corpus).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tvm
    from tvm import relax, te

# FuseOps pattern kOutEWiseFusable: elementwise consumers fuse in, nothing fuses across.
OUT_EWISE_FUSABLE = 4
DATA_PACK = "winograd_data_pack"
STAGE = "winograd_stage"
GEMM = "winograd_gemm"
INVERSE = "winograd_inverse"


@dataclass(frozen=True)
class WinogradConv:
    """A conv2d the pass rewrites: shapes (NCHW input, K output channels) and padding."""

    n: int
    c: int
    h: int
    w: int
    k: int
    pad: tuple[int, int, int, int]  # top, left, bottom, right
    m: int  # output tile size

    @property
    def out_h(self) -> int:
        return self.h + self.pad[0] + self.pad[2] - 2

    @property
    def out_w(self) -> int:
        return self.w + self.pad[1] + self.pad[3] - 2

    @property
    def tiles_h(self) -> int:
        return -(-self.out_h // self.m)

    @property
    def tiles_w(self) -> int:
        return -(-self.out_w // self.m)

    @property
    def tiles(self) -> int:
        return self.n * self.tiles_h * self.tiles_w


def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A [alpha, m], B [alpha, alpha], G [alpha, 3]) of F(m, 3), float64, in TOPI's
    convention: Y = A^T (U * V) A, V = B^T d B, U = G w G^T."""
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

    a, b, g = _cook_toom_convolution(_interpolation_points(m + 1), m, 3)
    return np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(g, np.float64)


def transform_weight(weight: np.ndarray, m: int) -> np.ndarray:
    """OIHW 3x3 weight [K, C, 3, 3] -> U [alpha*alpha, C, K] (float64 math, float32 out)."""
    _, _, g = matrices(m)
    alpha = m + 2
    u = np.einsum("ar,kcrs,bs->abck", g, weight.astype(np.float64), g)
    return np.ascontiguousarray(u.reshape(alpha * alpha, weight.shape[1], weight.shape[0])).astype(
        np.float32
    )


# Cost rule, measured with scripts/winograd-costs (1 thread, AVX-512, conv + bias + relu,
# direct conv vs F(2,3), F(4,3), F(6,3) side by side; time relative to the direct conv):
#   64->64 56x56: F4 0.52, F2 0.73     128->128 28x28: F4 0.42, F2 0.53
#   32->32 56x56: F4 0.83              16->16 112x112: F4 1.02, F2 1.39
#   256->256 14x14: F2 0.57, F4 0.64   512->512 7x7: F2 0.87, F4 0.99
#   batch 8: 256->256 14x14: F4 0.49   512->512 7x7: F4 0.50, F2 0.71
#   32->64 14x14: F2 1.07, F4 1.10     64->64 7x7: F2 1.31, F4 1.20
#   96->24 120x120: F4 0.80, F2 1.36   96->24 60x60: F4 0.71, F2 1.01 (PP-OCR neck; U padded)
# F(6,3) never won. The GEMM's work per tile grows with C*K, the transforms' with C + K, so
# channels are judged by their harmonic mean 2CK / (C + K) (32 for 32->32, 38 for 96->24,
# 16 for 16->16). A small map gives each transformed weight (alpha^2 / 9 times the
# original's bytes: the weights file and resident memory grow by that) few tiles to be
# reused over, so its GEMMs stream weights: F(4,3) pays from about 25 tiles (a 17x17 map at
# batch 1); F(2,3), whose transforms cost more per multiply-add saved, from 25 tiles with
# 128 channels. 512->512 at 7x7 (16 F(2,3) tiles) stays direct: 0.87x for 1.8x the
# weight bytes (+22 MB on ResNet-18) did not show end to end.
# Memory: a transformed weight above this stays untransformed (F(2,3) is tried instead of
# F(4,3), then the direct conv). Peak RSS is gated too (scripts/benchmark --check: +10 %
# relative to onnxruntime's); ResNet-18 at batch 8 with F(4,3) on its 512->512 convs
# (37.7 MB each instead of 9.4) would add 85 MB for 0.50x on those three convs.
MAX_WEIGHT_BYTES = 8 << 20
# Likewise the transformed input V ((m+2)^2 / m^2 times the input: 2.25x for F(4,3)) and
# the GEMM's output live beside the input: PP-OCRv4 det at batch 8, 480x480, would hold a
# 100 MB V for its 96->24 convs at 120x120. Above this the conv stays direct.
MAX_TRANSFORMED_INPUT_BYTES = 32 << 20
MIN_TILES = 25
MIN_CHANNELS = {4: 32, 2: 128}  # per m, in the order tried: least harmonic mean of C, K
DEFAULT_TILE = 4


# With --precision bf16 the direct conv is the bf16 kernel, about half the fp32 one's time
# (ResNet-18, 1 thread, profile-kernels: 64->64 56x56 0.59 ms per conv against F(4,3)'s
# 0.51 ms; 128->128 28x28 0.55 against 0.39; 256->256 14x14 0.50 against F(2,3)'s 0.52):
# F(4,3), 2.25x fewer multiply-adds, still wins, F(2,3) (1.8x) no longer does. The GEMM
# stays fp32: in bf16 F(4,3)'s transforms amplify the rounding to 2.4% of a layer's output
# magnitude (10x the direct bf16 conv's; F(2,3): 0.4%).
BF16_SIZES = (4,)


def choose_tile(conv: WinogradConv, sizes: tuple[int, ...] = tuple(MIN_CHANNELS)) -> int | None:
    """m of the F(m, 3) among `sizes` that beats the direct conv for this shape, None to keep
    the direct conv (see the measurements above). `conv.m` is ignored."""
    for m, least in MIN_CHANNELS.items():
        if m not in sizes:
            continue
        tiles = replace(conv, m=m).tiles
        if (
            2 * conv.c * conv.k >= least * (conv.c + conv.k)
            and tiles >= MIN_TILES
            and (m + 2) ** 2 * conv.c * conv.k * 4 <= MAX_WEIGHT_BYTES
            and (m + 2) ** 2 * tiles * conv.c * 4 <= MAX_TRANSFORMED_INPUT_BYTES
        ):
            return m
    return None


def _static_shape(expr: relax.Expr) -> list[int] | None:
    import tvm

    values = getattr(getattr(expr.ty, "shape", None), "values", None)
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return [int(v.value) for v in values]


def _match(call: relax.Call, sizes: tuple[int, ...]) -> WinogradConv | None:
    """The conv's shape when `call` is a float32 NCHW/OIHW 3x3 stride-1 dilation-1 dense
    conv2d with a constant weight, else None."""
    import tvm

    attrs = call.attrs
    x, w = call.args
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    if int(attrs.groups) != 1 or not isinstance(w, tvm.ir.expr.Constant):
        return None
    if any(int(s) != 1 for s in attrs.strides) or any(int(d) != 1 for d in attrs.dilation):
        return None
    if str(x.ty.dtype) != "float32" or str(w.ty.dtype) != "float32":
        return None
    if str(call.ty.dtype) != "float32":
        return None
    xs, ws = _static_shape(x), _static_shape(w)
    if xs is None or ws is None or len(xs) != 4 or ws[2:] != [3, 3] or ws[1] != xs[1]:
        return None
    pad = tuple(int(p) for p in attrs.padding)
    if len(pad) != 4:
        return None
    conv = WinogradConv(xs[0], xs[1], xs[2], xs[3], ws[0], pad, DEFAULT_TILE)  # type: ignore[arg-type]
    if conv.out_h <= 0 or conv.out_w <= 0:
        return None
    m = choose_tile(conv, sizes)
    return None if m is None else replace(conv, m=m)


def _nonzero_sum(terms: list[tuple[float, Any]], dtype: str) -> Any:
    """sum(coef * value) over nonzero coefficients; a +-1 coefficient adds/subtracts."""
    import tvm

    total = None
    for coef, value in terms:
        if coef == 0.0:
            continue
        if coef == 1.0:
            term = value
        elif coef == -1.0:
            term = -value
        else:
            term = tvm.tirx.const(coef, dtype) * value
        total = term if total is None else total + term
    return total if total is not None else tvm.tirx.const(0.0, dtype)


def _select(index: Any, branches: list[Any]) -> Any:
    """branches[index] for a symbolic index, as a chain of if_then_else: its condition stays
    scalar when the channel loop is vectorized (a Select's becomes a vector), so once the
    rules unroll the index it is a constant the simplifier folds."""
    import tvm

    out = branches[-1]
    for i in range(len(branches) - 2, -1, -1):
        out = tvm.tirx.if_then_else(index == i, branches[i], out)
    return out


def data_pack(x: te.Tensor, conv: WinogradConv) -> te.Tensor:
    """V[e, p, c] = (B^T d B)[e] for the input tile d of tile p, channel c.

    The input is first copied, zero padded, into a channels-last staging tensor (one pass):
    the transform then reads whole channel vectors with no bounds checks, where reading the
    NCHW input directly gathered 36 strided vectors per tile (5x slower, measured)."""
    import tvm
    from tvm import te

    _, b_mat, _ = matrices(conv.m)
    alpha = conv.m + 2
    top, left = conv.pad[0], conv.pad[1]
    rows, cols = conv.tiles_h * conv.m + 2, conv.tiles_w * conv.m + 2

    def staged(n: Any, h: Any, w: Any, c: Any) -> Any:
        hh, ww = h - top, w - left
        inside = tvm.tirx.all(hh >= 0, hh < conv.h, ww >= 0, ww < conv.w)
        return tvm.tirx.if_then_else(inside, x[n, c, hh, ww], tvm.tirx.const(0.0, x.dtype))

    padded = te.compute((conv.n, rows, cols, conv.c), staged, name=STAGE)

    def compute(e: Any, p: Any, c: Any) -> Any:
        n = p // (conv.tiles_h * conv.tiles_w)
        th = p // conv.tiles_w % conv.tiles_h
        tw = p % conv.tiles_w
        branches = [
            _nonzero_sum(
                [
                    (b_mat[r, a] * b_mat[s, b], padded[n, th * conv.m + r, tw * conv.m + s, c])
                    for r in range(alpha)
                    for s in range(alpha)
                ],
                x.dtype,
            )
            for a in range(alpha)
            for b in range(alpha)
        ]
        return _select(e, branches)

    return te.compute((alpha * alpha, conv.tiles, conv.c), compute, name=DATA_PACK)


def gemm(v: te.Tensor, u: te.Tensor) -> te.Tensor:
    """M[e, p, k] = sum_c V[e, p, c] * U[e, c, k]: one GEMM per tile position e."""
    from tvm import te

    ee, tiles, channels = v.shape
    c = te.reduce_axis((0, channels), name="c")
    return te.compute(
        (ee, tiles, u.shape[2]),
        lambda e, p, k: te.sum(v[e, p, c] * u[e, c, k], axis=c),
        name=GEMM,
    )


def inverse(mm: te.Tensor, conv: WinogradConv) -> te.Tensor:
    """Y[n, k, h, w] = (A^T M A)[h % m, w % m] of tile (n, h // m, w // m)."""
    from tvm import te

    a_mat, _, _ = matrices(conv.m)
    alpha = conv.m + 2

    def compute(n: Any, k: Any, h: Any, w: Any) -> Any:
        p = (n * conv.tiles_h + h // conv.m) * conv.tiles_w + w // conv.m
        rows = []
        for i in range(conv.m):
            cols = [
                _nonzero_sum(
                    [
                        (a_mat[a, i] * a_mat[b, j], mm[a * alpha + b, p, k])
                        for a in range(alpha)
                        for b in range(alpha)
                    ],
                    mm.dtype,
                )
                for j in range(conv.m)
            ]
            rows.append(_select(w % conv.m, cols))
        return _select(h % conv.m, rows)

    return te.compute((conv.n, conv.k, conv.out_h, conv.out_w), compute, name=INVERSE)


def _rewrite(
    bb: relax.BlockBuilder, call: relax.Call, conv: WinogradConv, lanes: int
) -> relax.Expr:
    """The three kernels. U gets zero output channels up to whole vectors (the GEMM's tile
    needs them: 24 channels ran on 8-lane vectors); the output transform reads the real ones."""
    from tvm import relax

    attrs = {"op_pattern": OUT_EWISE_FUSABLE}
    u = transform_weight(call.args[1].value.numpy(), conv.m)
    if conv.k > lanes and conv.k % lanes:
        u = np.pad(u, [(0, 0), (0, 0), (0, lanes - conv.k % lanes)])
    u = relax.const(u)
    v = bb.emit(
        bb.call_te(
            lambda x: data_pack(x, conv),
            call.args[0],
            primfunc_name_hint=DATA_PACK,
            primfunc_attrs=attrs,
        )
    )
    mm = bb.emit(bb.call_te(gemm, v, u, primfunc_name_hint=GEMM))
    return bb.call_te(
        lambda m: inverse(m, conv), mm, primfunc_name_hint=INVERSE, primfunc_attrs=attrs
    )


def WinogradConv2d(lanes: int, sizes: tuple[int, ...] = tuple(MIN_CHANNELS)) -> tvm.transform.Pass:
    """Module pass: rewrite every conv2d `choose_tile` picks among the F(m, 3) `sizes` (see
    the module docstring); `lanes`: the target's fp32 vector width, which the GEMM's output
    channels are padded to."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = self.visit_expr_post_order(call)
            if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
                return call
            conv = _match(call, sizes)
            if conv is None:
                return call
            return _rewrite(self.builder_, call, conv, lanes)

    def transform(mod: tvm.IRModule, _: Any) -> tvm.IRModule:
        rewriter = Rewriter(mod)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return tvm.transform.module_pass(transform, opt_level=0, name="WinogradConv2d")
