"""Lowering pass: a 1x1 stride-1 unpadded depthwise conv2d with a constant weight is a
per-channel multiply.

FastViT's unreparameterized MobileOne branches scale each channel with such a conv (also
with a channel multiplier: weight (2C, 1, 1, 1), groups C). After TIR normalization its
length-1 reduction loops vanish, so no conv rule claims it and it kept the reference
schedule (0.5-0.9 GFLOP/s, about a third of fastvit_t8's kernel time). As `x * w` it is an
elementwise op that FuseOps folds into its neighbours; a channel multiplier m repeats each
input channel m times first (output channel o reads input channel o // m, as the conv does);
a stride-s one reads every s-th row and column. A kxk depthwise conv with a channel
multiplier (FastViT's downsampling, weight (2C, 1, 7, 7), groups C) also kept the reference
schedule (3.4 GFLOP/s): over the repeated channels it is a plain depthwise conv.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm import relax


def _scaled(call: relax.Call) -> relax.Expr | None:
    """`call` as `x * w` or, with a channel multiplier and a kxk kernel, as a plain depthwise
    conv over the repeated channels; None if it is no depthwise conv or needs neither."""
    import tvm
    from tvm import relax

    attrs = call.attrs
    x, w = call.args
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    x_shape, w_shape = getattr(x.ty, "shape", None), getattr(w.ty, "shape", None)
    if x_shape is None or w_shape is None or len(x_shape) != 4 or len(w_shape) != 4:
        return None
    if not all(isinstance(d, tvm.tirx.IntImm) for d in (x_shape[1], *w_shape)):
        return None
    channels, groups = int(x_shape[1]), int(attrs.groups)
    out_channels, per_group, *kernel = (int(d) for d in w_shape)
    # groups 1: a dense conv over a one-channel input (a grayscale stem), the conv rules'
    if groups == 1 or groups != channels or per_group != 1 or out_channels % channels:
        return None
    multiplier = out_channels // channels
    source = x if multiplier == 1 else relax.op.repeat(x, multiplier, axis=1)
    strides = [int(s) for s in attrs.strides]
    unpadded = all(int(p) == 0 for p in attrs.padding)
    same_dtype = str(x.ty.dtype) == str(w.ty.dtype) == str(call.ty.dtype)
    if kernel == [1, 1] and unpadded and same_dtype and isinstance(w, tvm.ir.GenericConst):
        if strides != [1, 1]:
            source = relax.op.strided_slice(
                source, axes=[2, 3], begin=[0, 0], end=[x_shape[2], x_shape[3]], strides=strides
            )
        weight = w.value.numpy().reshape(1, -1, 1, 1)
        return relax.op.multiply(source, relax.const(weight))
    if multiplier == 1:
        return None  # a plain depthwise conv: the depthwise rule's
    return relax.op.nn.conv2d(
        source,
        w,
        strides=strides,
        padding=attrs.padding,
        dilation=attrs.dilation,
        groups=out_channels,
        data_layout="NCHW",
        kernel_layout="OIHW",
        out_layout="NCHW",
        out_dtype=str(call.ty.dtype),
    )


def DepthwiseScaleAsMultiply() -> tvm.transform.Pass:
    """Module pass: 1x1 depthwise convs as per-channel multiplies, channel multipliers as
    repeated channels (see the module docstring)."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("DepthwiseScaleAsMultiply", [("relax.nn.conv2d", 2)], _scaled)
