"""Lowering pass: a 1x1 stride-1 unpadded depthwise conv2d with a constant weight is a
per-channel multiply.

FastViT's unreparameterized MobileOne branches scale each channel with such a conv (also
with a channel multiplier: weight (2C, 1, 1, 1), groups C). After TIR normalization its
length-1 reduction loops vanish, so no conv rule claims it and it kept the reference
schedule (0.5-0.9 GFLOP/s, about a third of fastvit_t8's kernel time). As `x * w` it is an
elementwise op that FuseOps folds into its neighbours; a channel multiplier m repeats each
input channel m times first (output channel o reads input channel o // m, as the conv does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm import relax


def _scaled(call: relax.Call) -> relax.Expr | None:
    """`call` as `x * w` (channels repeated for a multiplier), or None if it is not one."""
    import tvm
    from tvm import relax

    attrs = call.attrs
    x, w = call.args
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    if not isinstance(w, tvm.ir.GenericConst):
        return None
    if any(int(s) != 1 for s in attrs.strides) or any(int(p) != 0 for p in attrs.padding):
        return None
    x_shape = getattr(x.ty, "shape", None)
    if x_shape is None or len(x_shape) != 4 or not isinstance(x_shape[1], tvm.tirx.IntImm):
        return None
    weight = w.value.numpy()
    channels, groups = int(x_shape[1]), int(attrs.groups)
    if groups != channels or weight.shape[1:] != (1, 1, 1) or weight.shape[0] % channels:
        return None
    dtype = str(call.ty.dtype)
    if str(x.ty.dtype) != dtype or str(weight.dtype) != dtype:
        return None  # a widening conv (fp16 in, fp32 out): leave it to the conv rules
    multiplier = weight.shape[0] // channels
    source = x if multiplier == 1 else relax.op.repeat(x, multiplier, axis=1)
    return relax.op.multiply(source, relax.const(weight.reshape(1, -1, 1, 1)))


def DepthwiseScaleAsMultiply() -> tvm.transform.Pass:
    """Module pass: 1x1 depthwise convs as per-channel multiplies (see the module docstring)."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("DepthwiseScaleAsMultiply", [("relax.nn.conv2d", 2)], _scaled)
