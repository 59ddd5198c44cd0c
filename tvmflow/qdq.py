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

Convolutions become one `qconv2d` kernel, in the operand layout x86's VNNI dot product
reads (`tvmflow.schedules.cpu_int8_conv2d` tensorizes it): the weight packed here, at
compile time, as [O/16, KH, KW, C/4, 16, 4]; the activation padded with its zero point and
packed as [N, H, W, C/4, 4] inside the kernel (int8 activations shifted by +128 to uint8
there, zero point with them). With padding by the zero point the zero-point term is a
constant per output channel (zx * sum(w)), folded with the bias. Depthwise convs become
`qdwconv2d` (`cpu_int8_depthwise_conv2d`). Both write NHWC: later integer convs, QDQ
residual adds (`qadd`, onnxruntime's QLinearAdd arithmetic) and QDQ max pools read that
directly; other consumers get a transpose. MatMul / Gemm become
`tvmflow.ops.quantized.integer_matmul` plus the same requantize (`cpu_int8_matmul`).

Only on targets with AVX512-VNNI: elsewhere nothing tensorizes the integer kernels and the
float path (DQ folded into float weights) is faster.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tvm
    from tvm import relax, te

LANES = 16  # output channels per vpdpbusd accumulator
GROUP = 4  # input channels summed per accumulator lane
SHIFT = 128  # int8 -> uint8
CONV_FUNC, DW_FUNC = "qconv2d", "qdwconv2d"
PACK_BLOCK, CONV_BLOCK, REQUANT_BLOCK = "qconv_pack", "qconv", "qconv_requant"
DW_PACK_BLOCK, DW_BLOCK = "qdwconv_pack", "qdwconv"
LAYOUT_ATTR = "tvmflow.qconv_input_layout"  # NCHW / NHWC: how the pack reads the input
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


def _weight(
    var2val: dict[Any, Any], expr: Any, ndim: int, channel_axis: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """A constant symmetric int8 weight as (values, float32 scales: one, or one per output
    channel along `channel_axis`)."""
    q = _dequantized(var2val, expr)
    if q is None:
        return None
    w = _const(q.data)
    if w is None or w.dtype != np.int8 or w.ndim != ndim or q.zero_point.any():
        return None
    if q.scale.size > 1:
        axis = int(_call(var2val, expr, "relax.dequantize").attrs.axis) % ndim
        if axis != channel_axis or q.scale.size != w.shape[axis]:
            return None
    return w, q.scale


def _int_bias(
    var2val: Any, bias_expr: Any, x: Any, w_scale: np.ndarray, channels: int
) -> np.ndarray | None:
    """The int32 bias of an integer conv / matmul: zeros without a bias, else the float bias
    in units of x_scale * w_scale (None where it is not such a constant)."""
    if bias_expr is None:
        return np.zeros(channels, np.int32)
    sxw = np.float32(x.scale[0]) * np.broadcast_to(w_scale, (channels,))
    return _bias(var2val, bias_expr, channels, sxw.astype(np.float32))


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


@dataclass(frozen=True)
class ConvSpec:
    """What one integer conv kernel computes (everything static)."""

    in_shape: tuple[int, ...]  # as the kernel reads it, in `in_layout`
    in_layout: str  # "NCHW" (from float ops) or "NHWC" (from another integer kernel)
    in_dtype: str  # uint8 / int8
    padding: tuple[int, ...]  # top, left, bottom, right
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    out_shape: tuple[int, ...]  # NHWC
    zx: int
    zy: int
    low: int
    high: int
    out_dtype: str


def _padded_input(x: te.Tensor, spec: ConvSpec, group: int, name: str) -> te.Tensor:
    """The activation padded with its zero point, channels last ([N, H, W, C] for group 1,
    [N, H, W, C/4, 4] for group 4, channels beyond C also the zero point), int8 shifted by
    +128 to uint8. Only the bounds that exist are tested: an NHWC uint8 input with no
    padding and whole channel groups is a plain load (the rule then reads the input
    directly, no pack pass)."""
    from tvm import te, tirx

    if spec.in_layout == "NCHW":
        n_, c_, h_, w_ = spec.in_shape
    else:
        n_, h_, w_, c_ = spec.in_shape
    top, left, bottom, right = spec.padding
    shift = SHIFT if spec.in_dtype == "int8" else 0

    def value(n: Any, y: Any, xx: Any, c: Any) -> Any:
        bounds = [c < c_] if c_ % group else []
        if top or bottom:
            bounds += [y >= top, y < h_ + top]
        if left or right:
            bounds += [xx >= left, xx < w_ + left]
        if bounds:
            c = tirx.min(c, c_ - 1)
        nchw = spec.in_layout == "NCHW"
        v = x[n, c, y - top, xx - left] if nchw else x[n, y - top, xx - left, c]
        if shift:
            v = (v.astype("int32") + shift).astype("uint8")
        if not bounds:
            return v
        return tirx.if_then_else(tirx.all(*bounds), v, tirx.const(spec.zx + shift, "uint8"))

    rows, cols = h_ + top + bottom, w_ + left + right
    if group == 1:
        return te.compute((n_, rows, cols, c_), value, name=name)
    return te.compute(
        (n_, rows, cols, -(-c_ // group), group),
        lambda n, y, xx, cb, ci: value(n, y, xx, cb * group + ci),
        name=name,
    )


def _requantized(acc: te.Tensor, offset: te.Tensor, scale: te.Tensor, spec: ConvSpec) -> Any:
    """round-half-even(float(acc + offset) * scale) + zy, saturated, NHWC (channel-innermost:
    whole vectors from the accumulators, contiguous stores)."""
    from tvm import te, tirx

    def requant(n: Any, y: Any, xx: Any, o: Any) -> Any:
        total = (acc[n, y, xx, o] + offset[o]).astype("float32") * scale[o]
        value = tirx.nearbyint(total) + tirx.const(float(spec.zy), "float32")
        clipped = tirx.max(tirx.min(value, float(spec.high)), float(spec.low))
        return clipped.astype(spec.out_dtype)

    return te.compute(spec.out_shape, requant, name=REQUANT_BLOCK)


def conv2d_compute(
    x: te.Tensor, weight: te.Tensor, offset: te.Tensor, scale: te.Tensor, spec: ConvSpec
) -> te.Tensor:
    """The qconv2d kernel: pack (`_padded_input`, groups of 4 channels), u8 x i8 -> i32
    conv over the packed weight [O/16, KH, KW, C/4, 16, 4] into [N, OH, OW, O/16*16],
    requantize acc + offset (bias - zx * sum(w)) per channel (`_requantized`)."""
    from tvm import te

    _, kh_, kw_, cb, _, _ = (int(d) for d in weight.shape)
    ob = int(weight.shape[0])
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    packed = _padded_input(x, spec, GROUP, PACK_BLOCK)
    rc = te.reduce_axis((0, cb), "rc")
    ry, rx = te.reduce_axis((0, kh_), "ry"), te.reduce_axis((0, kw_), "rx")
    ri = te.reduce_axis((0, GROUP), "ri")
    n_, out_h, out_w, _ = spec.out_shape
    acc = te.compute(
        (n_, out_h, out_w, ob * LANES),
        lambda n, y, xx, o: te.sum(
            packed[n, y * sh + ry * dh, xx * sw + rx * dw, rc, ri].astype("int32")
            * weight[o // LANES, ry, rx, rc, o % LANES, ri].astype("int32"),
            axis=[ry, rx, rc, ri],
        ),
        name=CONV_BLOCK,
    )
    return _requantized(acc, offset, scale, spec)


def depthwise_compute(
    x: te.Tensor, weight: te.Tensor, offset: te.Tensor, scale: te.Tensor, spec: ConvSpec
) -> te.Tensor:
    """The qdwconv2d kernel: pack (`_padded_input`, channels last), i32 multiply-adds with
    the weight as int32 [KH, KW, C], requantize (`_requantized`)."""
    from tvm import te

    kh_, kw_, _ = (int(d) for d in weight.shape)
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    packed = _padded_input(x, spec, 1, DW_PACK_BLOCK)
    ry, rx = te.reduce_axis((0, kh_), "ry"), te.reduce_axis((0, kw_), "rx")
    acc = te.compute(
        spec.out_shape,
        lambda n, y, xx, c: te.sum(
            packed[n, y * sh + ry * dh, xx * sw + rx * dw, c].astype("int32") * weight[ry, rx, c],
            axis=[ry, rx],
        ),
        name=DW_BLOCK,
    )
    return _requantized(acc, offset, scale, spec)


def conv_kernel(spec: ConvSpec, weight: np.ndarray, depthwise: bool) -> tvm.tirx.PrimFunc:
    """The PrimFunc (x, packed weight, offset, scale) -> NHWC output of one integer conv."""
    from tvm import te

    channels = spec.out_shape[3]
    xt = te.placeholder(spec.in_shape, spec.in_dtype, "x")
    wt = te.placeholder(weight.shape, str(weight.dtype), "w")
    ot = te.placeholder((channels,), "int32", "offset")
    st = te.placeholder((channels,), "float32", "scale")
    compute = depthwise_compute if depthwise else conv2d_compute
    out = compute(xt, wt, ot, st, spec)
    func = te.create_prim_func([xt, wt, ot, st, out]).without_attr("global_symbol")
    return func.with_attr("op_pattern", OPAQUE).with_attr(LAYOUT_ATTR, spec.in_layout)


def conv_operands(
    w: np.ndarray, bias: np.ndarray, zx: int, x_dtype: str, depthwise: bool
) -> tuple[np.ndarray, np.ndarray]:
    """An OIHW int8 weight packed for its kernel, and the int32 offset per output channel
    that folds bias and zero point: sum((x - zx) w) + bias = sum(x' w) + bias - zx' sum(w),
    x' and zx' shifted to uint8 for int8 activations."""
    shift = SHIFT if x_dtype == "int8" else 0
    wsum = w.astype(np.int64).reshape(w.shape[0], -1).sum(axis=1)
    offset = (bias.astype(np.int64) - (zx + shift) * wsum).astype(np.int32)
    return (pack_depthwise_weight(w) if depthwise else pack_conv_weight(w)), offset


def pack_conv_weight(w: np.ndarray) -> np.ndarray:
    """OIHW int8 -> [O/16, KH, KW, C/4, 16, 4], zero-filled up to whole groups."""
    o, c, kh, kw = w.shape
    ob, cb = -(-o // LANES), -(-c // GROUP)
    full = np.zeros((ob * LANES, cb * GROUP, kh, kw), np.int8)
    full[:o, :c] = w
    return np.ascontiguousarray(
        full.reshape(ob, LANES, cb, GROUP, kh, kw).transpose(0, 4, 5, 2, 1, 3)
    )


def pack_depthwise_weight(w: np.ndarray) -> np.ndarray:
    """[C, 1, KH, KW] int8 -> int32 [KH, KW, C]: channel vectors, no widening in the loop."""
    return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0).astype(np.int32))


NHWC_TO_NCHW, NCHW_TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


@dataclass(frozen=True)
class QAddSpec:
    """onnxruntime's QLinearAdd constants (MLAS's AVX2 kernel, which it runs on x86):
    c = round-half-even(fma(a, ra, fma(b, rb, fixed))), saturated, where ra = sa / sc,
    rb = sb / sc and fixed = zc - fma(za, ra, rb * zb), all float32."""

    ra: float
    rb: float
    fixed: float
    dtype: str

    @staticmethod
    def of(sa: Any, za: Any, sb: Any, zb: Any, sc: Any, zc: Any, dtype: str) -> QAddSpec:
        f32 = np.float32
        ra, rb = f32(f32(sa) / f32(sc)), f32(f32(sb) / f32(sc))
        # float64 holds the product exactly: one rounding to float32, as an FMA rounds
        inner = f32(np.float64(f32(za)) * np.float64(ra) + np.float64(f32(rb * f32(zb))))
        return QAddSpec(float(ra), float(rb), float(f32(f32(zc) - inner)), dtype)


def qadd_compute(a: te.Tensor, b: te.Tensor, spec: QAddSpec) -> te.Tensor:
    """The QDQ residual add on the integers (`QAddSpec`), fused multiply-adds as LLVM's fma."""
    from tvm import te, tirx

    low, high = RANGES[spec.dtype]

    def fma(x: Any, y: float, z: Any) -> Any:
        return tirx.call_llvm_pure_intrin("float32", "llvm.fma", x, tirx.const(y, "float32"), z)

    def add(*i: Any) -> Any:
        v = fma(b(*i).astype("float32"), spec.rb, tirx.const(spec.fixed, "float32"))
        v = fma(a(*i).astype("float32"), spec.ra, v)
        clipped = tirx.max(tirx.min(tirx.nearbyint(v), float(high)), float(low))
        return clipped.astype(spec.dtype)

    return te.compute(a.shape, add, name="qadd")


class _Rewriter:
    """Builds the integer replacement of one Q call, or says None. Integer conv outputs are
    NHWC; `nhwc` maps each original Q call so rewritten to its NHWC value, which later
    integer convs, QDQ adds and max pools read directly (the NCHW transpose the replacement
    returns is then dead and goes)."""

    def __init__(self, mutator: Any, var2val: dict[Any, Any]) -> None:
        self.mutator = mutator
        self.var2val = var2val
        self.nhwc: dict[Any, Any] = {}

    def rewrite(self, q_call: Any) -> Any:
        y, relu = q_call.args[0], False
        inner = _call(self.var2val, y, "relax.nn.relu")
        if inner is not None:
            y, relu = inner.args[0], True
        for op, make in (("relax.nn.max_pool2d", self._pool), ("relax.add", self._add)):
            call = _call(self.var2val, y, op)
            if call is not None and not relu:
                found = make(q_call, call)
                if found is not None:
                    return found
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

    def _nhwc_of(self, q_var: Any) -> Any:
        """The NHWC value of an already rewritten quantized tensor, or None."""
        return self.nhwc.get(self.var2val.get(q_var))

    def _emit_nhwc(self, q_call: Any, value: Any) -> Any:
        nhwc = self.mutator.builder_.emit(value)
        self.nhwc[q_call] = nhwc
        return _permute(nhwc, NHWC_TO_NCHW)

    def _pool(self, q_call: Any, pool: Any) -> Any:
        """Q(max_pool(DQ(a))) of an NHWC `a`: the same ops in NHWC."""
        from tvm import relax

        a = pool.attrs
        dq = _call(self.var2val, pool.args[0], "relax.dequantize")
        if dq is None or a.layout != "NCHW" or a.out_layout != "NCHW":
            return None
        if not _per_tensor(dq) or not _per_tensor(q_call):
            return None
        source = self._nhwc_of(dq.args[0])
        if source is None:
            return None
        op = relax.op
        pooled = op.nn.max_pool2d(
            op.dequantize(source, dq.args[1], dq.args[2], axis=-1, out_dtype="float32"),
            pool_size=a.pool_size,
            strides=a.strides,
            padding=a.padding,
            dilation=a.dilation,
            ceil_mode=a.ceil_mode,
            layout="NHWC",
        )
        return self._emit_nhwc(q_call, _quantize_like(q_call, pooled))

    def _add(self, q_call: Any, add: Any) -> Any:
        """Q(DQ(a) + DQ(b)) (a residual) of same-shaped 8-bit tensors as onnxruntime's
        QLinearAdd computes it (`qadd_compute`); NHWC where a or b is."""
        dqs = [_call(self.var2val, arg, "relax.dequantize") for arg in add.args]
        if any(dq is None or not _per_tensor(dq) for dq in dqs) or not _per_tensor(q_call):
            return None
        dtype = str(q_call.attrs.out_dtype)
        shapes = {tuple(int(d) for d in dq.args[0].ty.shape.values) for dq in dqs}
        if len(shapes) != 1 or any(str(dq.args[0].ty.dtype) != dtype for dq in dqs):
            return None
        params = [_const(arg) for dq in dqs for arg in dq.args[1:3]]
        out = [_const(q_call.args[1]), _const(q_call.args[2])]
        if any(p is None for p in params + out):
            return None
        (sa, za, sb, zb), (sc, zc) = params, out
        sources = [self._nhwc_of(dq.args[0]) for dq in dqs]
        nhwc = len(shapes.pop()) == 4 and any(s is not None for s in sources)
        args = []
        for dq, source in zip(dqs, sources, strict=True):
            if not nhwc:
                source = self.mutator.visit_expr(dq.args[0])
            elif source is None:
                source = _permute(self.mutator.visit_expr(dq.args[0]), NCHW_TO_NHWC)
            args.append(source)
        spec = QAddSpec.of(sa, za, sb, zb, sc, zc, dtype)
        value = self.mutator.builder_.emit_te(
            functools.partial(qadd_compute, spec=spec), *args, primfunc_name_hint="qadd"
        )
        if not nhwc:
            return value
        self.nhwc[q_call] = value
        return _permute(value, NHWC_TO_NCHW)

    def _conv(self, q_call: Any, conv: Any, bias_expr: Any, relu: bool) -> Any:
        from tvm import relax

        a = conv.attrs
        if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW"):
            return None
        x = _dequantized(self.var2val, conv.args[0])
        weight = _weight(self.var2val, conv.args[1], 4, 0)
        if x is None or weight is None or len(conv.ty.shape.values) != 4:
            return None
        w, w_scale = weight
        channels = w.shape[0]
        depthwise = int(a.groups) == channels == w.shape[0] and w.shape[1] == 1
        if (int(a.groups) != 1 and not depthwise) or w_scale.size not in (1, channels):
            return None
        rq = _requant(q_call, x, w_scale, channels, relu)
        if rq is None:
            return None
        bias = _int_bias(self.var2val, bias_expr, x, w_scale, channels)
        if bias is None:
            return None
        zx = int(x.zero_point[0])
        packed, offset = conv_operands(w, bias, zx, str(x.data.ty.dtype), depthwise)
        source = self._nhwc_of(x.data)
        layout = "NCHW" if source is None else "NHWC"
        if source is None:
            source = self.mutator.visit_expr(x.data)
        n, o, oh, ow = (int(d) for d in conv.ty.shape.values)
        spec = ConvSpec(
            in_shape=tuple(int(d) for d in source.ty.shape.values),
            in_layout=layout,
            in_dtype=str(x.data.ty.dtype),
            padding=tuple(int(p) for p in a.padding),
            strides=tuple(int(s) for s in a.strides),
            dilation=tuple(int(d) for d in a.dilation),
            out_shape=(n, oh, ow, o),
            zx=zx,
            zy=rq.zero_point,
            low=rq.low,
            high=rq.high,
            out_dtype=rq.dtype,
        )
        gv = self.mutator.builder_.add_func(
            conv_kernel(spec, packed, depthwise), DW_FUNC if depthwise else CONV_FUNC
        )
        args = [source, relax.const(packed), relax.const(offset), relax.const(rq.scale)]
        out_ty = relax.TensorType(spec.out_shape, rq.dtype)
        return self._emit_nhwc(q_call, relax.call_tir(gv, args, out_ty))

    def _matmul(self, q_call: Any, matmul: Any, bias_expr: Any, relu: bool) -> Any:
        from tvm import relax

        from tvmflow.ops.quantized import integer_matmul

        x = _dequantized(self.var2val, matmul.args[0])
        w_expr, transposed = matmul.args[1], False
        permute = _call(self.var2val, w_expr, "relax.permute_dims")
        if permute is not None and len(permute.args[0].ty.shape.values) == 2:
            w_expr, transposed = permute.args[0], True
        weight = _weight(self.var2val, w_expr, 2, 0 if transposed else 1)
        if x is None or weight is None or str(matmul.attrs.out_dtype) not in ("None", "float32"):
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
        bias = _int_bias(self.var2val, bias_expr, x, w_scale, channels)
        if bias is None:
            return None
        # zero columns up to whole 16-lane vectors (the int8 matmul rule's tile), sliced off
        extra = -channels % LANES
        w = np.pad(w, [(0, 0), (0, extra)])
        rq = replace(rq, scale=np.pad(rq.scale, (0, extra)))
        acc = integer_matmul(
            self.mutator.builder_,
            self.mutator.visit_expr(x.data),
            relax.const(w),
            relax.const(x.zero_point.reshape(()).astype(str(x.data.ty.dtype))),
        )
        out = requantize(relax.op.add(acc, relax.const(np.pad(bias, (0, extra)))), rq)
        if not extra:
            return out
        axis = len(matmul.ty.shape.values) - 1
        return relax.op.strided_slice(out, axes=[axis], begin=[0], end=[channels])


def _permute(x: Any, axes: list[int]) -> Any:
    from tvm import relax

    return relax.op.permute_dims(x, axes)


def _per_tensor(call: Any) -> bool:
    """A Q / DQ with one scale and zero point (its axis does not matter in another layout)."""
    return all(math.prod(int(d) for d in arg.ty.shape.values) == 1 for arg in call.args[1:3])


def _quantize_like(q_call: Any, value: Any) -> Any:
    """`value` quantized with `q_call`'s (per-tensor) scale, zero point and type."""
    from tvm import relax

    return relax.op.quantize(
        value, q_call.args[1], q_call.args[2], axis=-1, out_dtype=str(q_call.attrs.out_dtype)
    )


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
