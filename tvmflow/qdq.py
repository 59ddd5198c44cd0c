"""Lowering pass: QDQ chains (DequantizeLinear -> Conv / MatMul / Gemm -> QuantizeLinear) as
integer kernels.

ONNX's QDQ format (onnxruntime's `quantize_static`) stores int8 tensors but spells every
quantized op as float: DQ(x_u8) and DQ(w_i8) feed a float Conv or MatMul (plus a DQ'd int32
bias), whose result a Q turns back into u8. Imported as written it runs in float32. Here

    Q(relu?(conv(DQ(x), DQ(w)) + DQ(bias)))  ->  requantize(conv_int(x, w) + bias)

with the accumulation exact in int32 and the requantize as onnxruntime's QLinearConv does it:
round-half-even(float(acc) * (sx * sw / sy)) + zy, saturated (a Relu folds into the lower
bound: zy). Weight scales stay per channel. A Relu, a missing bias, int8 or uint8
activations and outputs are all matched; weights must be int8 with zero points of 0
(symmetric, what `quantize_static` makes), the scales and zero points constants.

Convolutions become one `qconv2d` kernel (`int8_conv2d`), in the operand layout x86's VNNI
dot product reads (`tvmflow.schedules.cpu_int8_conv2d` tensorizes it): the weight packed
here, at compile time, as [O/16, KH, KW, C/4, 16, 4]; the activation padded with its zero
point and packed as [N, H, W, C/4, 4] inside the kernel (int8 activations shifted by +128 to
uint8 there, zero point with them). With padding by the zero point the zero-point term is a
constant per output channel (zx * sum(w)), folded with the bias. MatMul / Gemm become
`tvmflow.ops.quantized.integer_matmul` plus the same requantize (`cpu_int8_matmul`).

Only on targets with AVX512-VNNI: elsewhere nothing tensorizes the integer kernels and the
float path (DQ folded into float weights) is faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tvm
    from tvm import relax, te

LANES = 16  # output channels per vpdpbusd accumulator
GROUP = 4  # input channels summed per accumulator lane
SHIFT = 128  # int8 -> uint8
CONV_FUNC = "qconv2d"
PACK_BLOCK, CONV_BLOCK, REQUANT_BLOCK = "qconv_pack", "qconv", "qconv_requant"
OPAQUE = 8  # relax OpPatternKind.kOpaque: FuseOps leaves the kernel as it is
RANGES = {"uint8": (0, 255), "int8": (-128, 127)}


@dataclass(frozen=True)
class Quant:
    """A tensor's quantization: the integer expression and its constant scale / zero point."""

    data: Any  # relax.Expr of dtype uint8 / int8
    scale: np.ndarray  # float32, size 1 or per channel
    zero_point: np.ndarray  # int64


@dataclass(frozen=True)
class Requant:
    """What the integer result turns into: scale per output channel, zero point, range."""

    scale: np.ndarray  # float32 [channels]: sx * sw / sy, in onnxruntime's order
    zero_point: int
    low: int
    high: int
    dtype: str


def _const(expr: Any) -> np.ndarray | None:
    import tvm

    if isinstance(expr, tvm.ir.GenericConst):
        return np.asarray(expr.value.numpy())
    return None


def _call(var2val: dict[Any, Any], expr: Any, op: str) -> Any:
    """The call of `op` bound to `expr` (a variable), or None."""
    import tvm
    from tvm import relax

    value = var2val.get(expr, expr) if isinstance(expr, relax.Var) else expr
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == op:
        return value
    return None


def _dequantized(
    var2val: dict[Any, Any], expr: Any, dtypes: tuple[str, ...] = tuple(RANGES)
) -> Quant | None:
    """`expr` as DQ(q, scale, zero point) with constant scale and zero point, q of `dtypes`."""
    call = _call(var2val, expr, "relax.dequantize")
    if call is None or str(call.args[0].ty.dtype) not in dtypes:
        return None
    scale, zp = _const(call.args[1]), _const(call.args[2])
    if scale is None or zp is None or str(call.attrs.out_dtype) != "float32":
        return None
    return Quant(call.args[0], scale.astype("float32").reshape(-1), zp.astype("int64").reshape(-1))


def _weight(var2val: dict[Any, Any], expr: Any, ndim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A constant symmetric int8 weight as (values, per-output-channel float32 scales)."""
    q = _dequantized(var2val, expr)
    if q is None:
        return None
    w = _const(q.data)
    if w is None or w.dtype != np.int8 or w.ndim != ndim or q.zero_point.any():
        return None
    return w, q.scale


def _bias(var2val: dict[Any, Any], expr: Any, channels: int, scale: np.ndarray) -> Any:
    """An int32 bias DQ'd with scale sx * sw (as `quantize_static` writes it; onnxruntime's
    QLinearConv adds it to the accumulator as is), possibly reshaped: the int32 values, or
    None."""
    reshape = _call(var2val, expr, "relax.reshape")
    q = _dequantized(var2val, reshape.args[0] if reshape is not None else expr, ("int32",))
    if q is None:
        return None
    b = _const(q.data)
    if b is None or b.dtype != np.int32 or b.size != channels or q.zero_point.any():
        return None
    if not np.allclose(np.broadcast_to(q.scale, scale.shape), scale, rtol=1e-4, atol=0):
        return None
    return b.reshape(-1)


def _requant(call: Any, x: Quant, w_scale: np.ndarray, channels: int, relu: bool) -> Any:
    """The Q of `call` as a Requant (per-tensor output scale and zero point), or None."""
    sy, zy = _const(call.args[1]), _const(call.args[2])
    dtype = str(call.attrs.out_dtype)
    if sy is None or zy is None or sy.size != 1 or zy.size != 1 or dtype not in RANGES:
        return None
    if x.scale.size != 1 or x.zero_point.size != 1:
        return None
    f32 = np.float32
    scale = (f32(x.scale[0]) * np.broadcast_to(w_scale, (channels,)).astype(f32)) / f32(sy)
    low, high = RANGES[dtype]
    zero = int(zy.reshape(-1)[0])
    return Requant(scale.astype(f32), zero, max(low, zero) if relu else low, high, dtype)


def conv2d_compute(
    x: te.Tensor,
    weight: te.Tensor,
    offset: te.Tensor,
    scale: te.Tensor,
    attrs: dict[str, Any],
) -> te.Tensor:
    """The qconv2d kernel: pack (pad with the zero point, shift int8 to uint8, channels
    last in groups of 4), u8 x i8 -> i32 conv over the packed weight [O/16, KH, KW, C/4,
    16, 4], then requantize acc + offset (bias - zx * sum(w)) per channel into NCHW."""
    from tvm import te, tirx

    n_, c_, h_, w_ = (int(d) for d in x.shape)
    ob, kh_, kw_, cb, _, _ = (int(d) for d in weight.shape)
    top, left, bottom, right = attrs["padding"]
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilation"]
    out_c, out_h, out_w = attrs["out_shape"][1:]
    zx, shift = int(attrs["zx"]), SHIFT if str(x.dtype) == "int8" else 0

    def pack(n: Any, y: Any, xx: Any, c4: Any, ci: Any) -> Any:
        c = c4 * GROUP + ci
        inside = tirx.all(c < c_, y >= top, y < h_ + top, xx >= left, xx < w_ + left)
        value = x[n, tirx.min(c, c_ - 1), y - top, xx - left]
        if shift:
            value = (value.astype("int32") + shift).astype("uint8")
        return tirx.if_then_else(inside, value, tirx.const(zx + shift, "uint8"))

    padded = (n_, h_ + top + bottom, w_ + left + right, cb, GROUP)
    packed = te.compute(padded, pack, name=PACK_BLOCK)
    rc = te.reduce_axis((0, cb), "rc")
    ry, rx = te.reduce_axis((0, kh_), "ry"), te.reduce_axis((0, kw_), "rx")
    ri = te.reduce_axis((0, GROUP), "ri")
    acc = te.compute(
        (n_, ob * LANES, out_h, out_w),
        lambda n, o, y, xx: te.sum(
            packed[n, y * sh + ry * dh, xx * sw + rx * dw, rc, ri].astype("int32")
            * weight[o // LANES, ry, rx, rc, o % LANES, ri].astype("int32"),
            axis=[ry, rx, rc, ri],
        ),
        name=CONV_BLOCK,
    )
    low, high = attrs["low"], attrs["high"]

    def requant(n: Any, o: Any, y: Any, xx: Any) -> Any:
        total = (acc[n, o, y, xx] + offset[o]).astype("float32") * scale[o]
        value = tirx.nearbyint(total) + tirx.const(float(attrs["zy"]), "float32")
        clipped = tirx.max(tirx.min(value, float(high)), float(low))
        return clipped.astype(attrs["out_dtype"])

    return te.compute((n_, out_c, out_h, out_w), requant, name=REQUANT_BLOCK)


def pack_conv_weight(w: np.ndarray) -> np.ndarray:
    """OIHW int8 -> [O/16, KH, KW, C/4, 16, 4], zero-filled up to whole groups."""
    o, c, kh, kw = w.shape
    ob, cb = -(-o // LANES), -(-c // GROUP)
    full = np.zeros((ob * LANES, cb * GROUP, kh, kw), np.int8)
    full[:o, :c] = w
    return np.ascontiguousarray(
        full.reshape(ob, LANES, cb, GROUP, kh, kw).transpose(0, 4, 5, 2, 1, 3)
    )


class _Rewriter:
    """Builds the integer replacement of one Q call (conv or matmul), or says None."""

    def __init__(self, mutator: Any, var2val: dict[Any, Any]) -> None:
        self.mutator = mutator
        self.var2val = var2val

    def rewrite(self, q_call: Any) -> Any:
        y, relu = q_call.args[0], False
        inner = _call(self.var2val, y, "relax.nn.relu")
        if inner is not None:
            y, relu = inner.args[0], True
        bias_expr = None
        add = _call(self.var2val, y, "relax.add")
        if add is not None:
            y, bias_expr = add.args
            if _call(self.var2val, y, "relax.nn.conv2d") is None and (
                _call(self.var2val, y, "relax.matmul") is None
            ):
                y, bias_expr = bias_expr, y
        conv = _call(self.var2val, y, "relax.nn.conv2d")
        if conv is not None:
            return self._conv(q_call, conv, bias_expr, relu)
        matmul = _call(self.var2val, y, "relax.matmul")
        if matmul is not None:
            return self._matmul(q_call, matmul, bias_expr, relu)
        return None

    def _conv(self, q_call: Any, conv: Any, bias_expr: Any, relu: bool) -> Any:
        from tvm import relax, te

        a = conv.attrs
        if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW"):
            return None
        if int(a.groups) != 1:
            return None
        x = _dequantized(self.var2val, conv.args[0])
        weight = _weight(self.var2val, conv.args[1], 4)
        if x is None or weight is None or len(conv.ty.shape.values) != 4:
            return None
        w, w_scale = weight
        channels = w.shape[0]
        if w_scale.size not in (1, channels):
            return None
        rq = _requant(q_call, x, w_scale, channels, relu)
        if rq is None:
            return None
        bias = np.zeros(channels, np.int32)
        if bias_expr is not None:
            sxw = np.float32(x.scale[0]) * np.broadcast_to(w_scale, (channels,))
            found = _bias(self.var2val, bias_expr, channels, sxw.astype(np.float32))
            if found is None:
                return None
            bias = found
        zx = int(x.zero_point[0])
        shift = SHIFT if str(x.data.ty.dtype) == "int8" else 0
        wsum = w.astype(np.int64).reshape(channels, -1).sum(axis=1)
        offset = (bias.astype(np.int64) - (zx + shift) * wsum).astype(np.int32)
        attrs = {
            "padding": [int(p) for p in a.padding],
            "strides": [int(s) for s in a.strides],
            "dilation": [int(d) for d in a.dilation],
            "out_shape": [int(d) for d in conv.ty.shape.values],
            "zx": zx,
            "zy": rq.zero_point,
            "low": rq.low,
            "high": rq.high,
            "out_dtype": rq.dtype,
        }
        packed = pack_conv_weight(w)
        xt = te.placeholder([int(d) for d in x.data.ty.shape.values], str(x.data.ty.dtype), "x")
        wt = te.placeholder(packed.shape, "int8", "w")
        ot = te.placeholder((channels,), "int32", "offset")
        st = te.placeholder((channels,), "float32", "scale")
        out = conv2d_compute(xt, wt, ot, st, attrs)
        func = te.create_prim_func([xt, wt, ot, st, out]).without_attr("global_symbol")
        func = func.with_attr("op_pattern", OPAQUE)
        gv = self.mutator.builder_.add_func(func, CONV_FUNC)
        args = [
            self.mutator.visit_expr(x.data),
            relax.const(packed),
            relax.const(offset),
            relax.const(rq.scale),
        ]
        return relax.call_tir(gv, args, relax.TensorType(attrs["out_shape"], rq.dtype))

    def _matmul(self, q_call: Any, matmul: Any, bias_expr: Any, relu: bool) -> Any:
        from tvm import relax

        from tvmflow.ops.quantized import integer_matmul

        x = _dequantized(self.var2val, matmul.args[0])
        w_expr, transposed = matmul.args[1], False
        permute = _call(self.var2val, w_expr, "relax.permute_dims")
        if permute is not None and len(permute.args[0].ty.shape.values) == 2:
            w_expr, transposed = permute.args[0], True
        weight = _weight(self.var2val, w_expr, 2)
        if x is None or weight is None or str(matmul.attrs.out_dtype) not in ("", "float32"):
            return None
        w, w_scale = weight
        if transposed:
            w = np.ascontiguousarray(w.T)
        channels = w.shape[1]
        if w_scale.size not in (1, channels):
            return None
        rq = _requant(q_call, x, w_scale, channels, relu)
        if rq is None:
            return None
        bb = self.mutator.builder_
        acc = integer_matmul(
            bb,
            self.mutator.visit_expr(x.data),
            relax.const(w),
            relax.const(x.zero_point.reshape(()).astype(str(x.data.ty.dtype))),
        )
        if bias_expr is not None:
            sxw = np.float32(x.scale[0]) * np.broadcast_to(w_scale, (channels,))
            bias = _bias(self.var2val, bias_expr, channels, sxw.astype(np.float32))
            if bias is None:
                return None
            acc = relax.op.add(acc, relax.const(bias))
        return requantize(acc, rq)


def requantize(acc: Any, rq: Requant) -> Any:
    """round-half-even(float(acc) * scale) + zy, saturated to [low, high] (Relax ops)."""
    from tvm import relax

    op = relax.op
    y = op.round(op.multiply(op.astype(acc, "float32"), relax.const(rq.scale)))
    y = op.add(y, relax.const(float(rq.zero_point), "float32"))
    return op.astype(op.clip(y, rq.low, rq.high), rq.dtype)


def QdqToInteger() -> tvm.transform.Pass:
    """Module pass: every matched Q(conv / matmul(DQ, DQ)) chain as an integer kernel (see
    the module docstring); the float ops it replaces go with DeadCodeElimination."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class Mutator(relax.PyExprMutator):  # type: ignore[misc]
        def __init__(self, mod: tvm.IRModule) -> None:
            super().__init__(mod)
            self.rewriter: _Rewriter | None = None

        def visit_call_(self, call: relax.Call) -> relax.Expr:
            if self.rewriter is not None and _call({}, call, "relax.quantize") is not None:
                new = self.rewriter.rewrite(call)
                if new is not None:
                    return new
            return super().visit_call_(call)

    def transform(mod: tvm.IRModule, _: Any) -> tvm.IRModule:
        mutator = Mutator(mod)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mutator.rewriter = _Rewriter(mutator, relax.analysis.get_var2val(func))
                new = mutator.visit_expr(func)
                mutator.builder_.update_func(gv, new)
        out = mutator.builder_.get()
        return relax.transform.DeadCodeElimination()(out)

    return tvm.transform.module_pass(transform, opt_level=0, name="QdqToInteger")
