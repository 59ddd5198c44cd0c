"""Lowering pass: a conv2d_transpose whose kernel equals its stride as a 1x1 conv + pixel shuffle.

Relax legalizes conv2d_transpose into a convolution over the input dilated with zeros, so
with stride s about (1 - 1/s^2) of its multiply-adds hit inserted zeros (75 % for the 2x2,
stride-2 upsamplers of DBNet/UNet heads). When the kernel equals the stride and there is no
padding, every output pixel (s*i + a, s*j + b) is the dot product of input pixel (i, j) with
the weight tap (a, b), so the op is exactly a 1x1 convolution to OC*s*s channels followed by
a depth-to-space interleave: s^2 times fewer multiply-adds, no zeros, and the 1x1 conv gets
the register-tiled conv rule. Other conv2d_transpose shapes are left as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm import relax


def _shape(expr: relax.Expr) -> list[int] | None:
    """A tensor's static shape, or None when it has symbolic or unknown dims."""
    import tvm

    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return [int(v.value) for v in values]


def _as_pixel_shuffle(call: relax.Call) -> relax.Expr | None:
    """The 1x1 conv + interleave that equals `call`, or None when it does not apply."""
    from tvm import relax

    attrs = call.attrs
    x, w = call.args
    x_shape, w_shape = _shape(x), _shape(w)
    if x_shape is None or w_shape is None or len(x_shape) != 4 or len(w_shape) != 4:
        return None
    strides = [int(s) for s in attrs.strides]
    plain = (
        attrs.data_layout == "NCHW"
        and attrs.kernel_layout == "IOHW"
        and attrs.out_layout == "NCHW"
        and int(attrs.groups) == 1
        and all(int(p) == 0 for p in attrs.padding)
        and all(int(p) == 0 for p in attrs.output_padding)
        and all(int(d) == 1 for d in attrs.dilation)
    )
    ic, oc, kh, kw = w_shape
    if not plain or strides != [kh, kw] or kh * kw == 1:
        return None
    n, _, h, wd = x_shape
    # weight [IC, OC, kh, kw] -> [OC*kh*kw, IC, 1, 1]: channel oc*kh*kw + a*kw + b is tap (a, b)
    weight = relax.op.reshape(relax.op.permute_dims(w, [1, 2, 3, 0]), (oc * kh * kw, ic, 1, 1))
    out_dtype = str(call.ty.dtype)
    y = relax.op.nn.conv2d(x, weight, out_dtype=out_dtype)
    y = relax.op.reshape(y, (n, oc, kh, kw, h, wd))
    y = relax.op.permute_dims(y, [0, 1, 4, 2, 5, 3])
    return relax.op.reshape(y, (n, oc, h * kh, wd * kw))


def SplitUpsamplingConvTranspose() -> tvm.transform.Pass:
    """Module pass: rewrite every kernel==stride conv2d_transpose (see the module docstring)."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass(
        "SplitUpsamplingConvTranspose", [("relax.nn.conv2d_transpose", 2)], _as_pixel_shuffle
    )
