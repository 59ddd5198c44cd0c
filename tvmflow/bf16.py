"""Lowering pass for `--precision bf16` on CPUs: conv2d and matmul compute in bf16, rest in fp32.

TVM's `ToMixedPrecision` is fp16-only, so this pass does the one rewrite bf16 needs: both
operands of a conv2d / matmul go through `astype(bfloat16)` and the op gets
`out_dtype="float32"` (bf16 products accumulated in fp32, as `vdpbf16ps` does). Weights are
constants, so FoldConstant stores them as bf16 (half the bytes); activations are converted in
the kernel that produces them (FuseOps fuses the cast into the producer's epilogue).

Only ops the bf16 micro-kernel (`schedules.cpu_bf16`) can run are rewritten: a constant
weight, columns a multiple of 16 (one `vdpbf16ps` vector) for matmuls, an even K for
matmuls (dpbf16 multiplies pairs; a conv with an odd channel count, an RGB stem, gets one
zero channel) and no groups. A conv's output channels are padded with zero filters to whole
vectors (sliced off after; fp32 convs get the same padding from `PadConvForTiles`), so
PP-OCR's 96->24 3x3 convs run in bf16 too; 1x1 convs need 16 output channels a vector (in
bf16, MobileNetV2's 144->24 / 96->24 projections were 4% faster at batch 8 but took its
error from 0.27 to 0.35, the tolerance 0.353). Anything else stays fp32: bf16 math without
the kernel is fp32 math plus conversions, i.e. slower. 1x1 convs over large planes run in
the planes variant (`Bf16PointwiseConv2d`), or, with an odd channel count, stay fp32
(`_pointwise_fp32`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tvmflow.upsample_conv import _shape

if TYPE_CHECKING:
    import tvm
    from tvm import relax

LANES = 16  # fp32 accumulators per vdpbf16ps


def _is_constant(expr: relax.Expr, bound: Mapping[relax.Var, relax.Expr]) -> bool:
    """A weight: computed from constants only (a constant, or one transposed (Gemm's transB),
    dequantized, reshaped...): FoldConstant turns it into a bf16 constant."""
    import tvm
    from tvm import relax

    if isinstance(expr, relax.Var):
        return expr in bound and _is_constant(bound[expr], bound)
    if isinstance(expr, relax.Call):
        return isinstance(expr.op, tvm.ir.Op) and all(_is_constant(a, bound) for a in expr.args)
    if isinstance(expr, relax.Tuple):
        return all(_is_constant(f, bound) for f in expr.fields)
    return not relax.analysis.free_vars(expr)  # constants, shapes, prim values


def _conv_fits(call: relax.Call, bound: Mapping[relax.Var, relax.Expr]) -> bool:
    attrs = call.attrs
    x, w = call.args
    w_shape = _shape(w)
    return (
        x.ty.dtype == "float32"
        and w.ty.dtype == "float32"
        and _is_constant(w, bound)
        and w_shape is not None
        and (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) == ("NCHW", "OIHW", "NCHW")
        and int(attrs.groups) == 1
        and (w_shape[0] % LANES == 0 or w_shape[2:] != [1, 1])
        and not (w_shape[1] % 2 and _pointwise_fp32(call, w_shape))
    )


def _pointwise_fp32(call: relax.Call, w_shape: list[int]) -> bool:
    """A 1x1 conv the fp32 `PointwiseConv2d` rule runs (a large plane, few channels). Its
    bf16 version runs in `Bf16PointwiseConv2d` (also vectorized over the plane) where the
    input channels pair up; with an odd count it stays fp32: `Bf16Gemm` vectorizes over
    output channels and scatters its tiles over the NCHW planes (MobileNetV2's expand convs
    at 56x56 and 112x112 ran 1.6-2x slower than in fp32)."""
    from tvmflow.schedules.cpu_bf16 import REGISTERS
    from tvmflow.schedules.cpu_pointwise_conv2d import pointwise_tile

    attrs = call.attrs
    x_shape = _shape(call.args[0])
    if x_shape is None or len(x_shape) != 4 or w_shape[2:] != [1, 1]:
        return False
    if any(int(s) != 1 for s in attrs.strides) or any(int(p) != 0 for p in attrs.padding):
        return False
    plane = x_shape[2] * x_shape[3]
    return pointwise_tile(w_shape[0], plane, x_shape[1] * 4, LANES, REGISTERS) is not None


def _matmul_fits(call: relax.Call, bound: Mapping[relax.Var, relax.Expr]) -> bool:
    a, b = call.args
    b_shape = _shape(b)
    return (
        a.ty.dtype == "float32"
        and a.ty.ndim >= 2  # rows to tile (a vector times a matrix is a GEMV)
        and b.ty.dtype == "float32"
        and _is_constant(b, bound)
        and b_shape is not None
        and len(b_shape) == 2
        and b_shape[0] % 2 == 0
        and b_shape[1] % LANES == 0
    )


def _rewrite(call: relax.Call, bound: Mapping[relax.Var, relax.Expr]) -> relax.Expr:
    from tvm import relax

    from tvmflow.conv_tiles import _channel_padding

    name = call.op.name
    if name == "relax.nn.conv2d" and _conv_fits(call, bound):
        a = call.attrs
        x, w = call.args
        w_shape = _shape(w) or [0, 0]
        # zero filters up to whole vectors (as `PadConvForTiles` pads an fp32 conv)
        extra = _channel_padding(w_shape[0], LANES)
        if w_shape[1] % 2 or extra:
            # an odd channel count (an RGB stem): one zero channel more, as dpbf16 sums pairs
            odd = w_shape[1] % 2
            x = relax.op.nn.pad(x, [0, 0, 0, odd, 0, 0, 0, 0]) if odd else x
            w = relax.op.nn.pad(w, [0, extra, 0, odd, 0, 0, 0, 0])
        x, w = relax.op.astype(x, "bfloat16"), relax.op.astype(w, "bfloat16")
        y = relax.op.nn.conv2d(
            x,
            w,
            strides=a.strides,
            padding=a.padding,
            dilation=a.dilation,
            groups=a.groups,
            data_layout=a.data_layout,
            kernel_layout=a.kernel_layout,
            out_layout=a.out_layout,
            out_dtype="float32",
        )
        if not extra:
            return y
        return relax.op.strided_slice(y, axes=[1], begin=[0], end=[w_shape[0]])
    if name == "relax.matmul" and _matmul_fits(call, bound):
        a, b = (relax.op.astype(arg, "bfloat16") for arg in call.args)
        return relax.op.matmul(a, b, out_dtype="float32")
    return call


def Bf16Compute() -> tvm.transform.Pass:
    """conv2d / matmul ops the bf16 kernel runs compute in bf16 (fp32 accumulation)."""
    from tvm import relax

    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass(
        "Bf16Compute",
        [("relax.nn.conv2d", 2), ("relax.matmul", 2)],
        per_function=lambda func: functools.partial(
            _rewrite, bound=relax.analysis.get_var2val(func)
        ),
    )
