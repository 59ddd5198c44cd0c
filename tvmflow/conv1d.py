"""Lowering pass: conv1d as a conv2d over a height-1 image, so the CPU conv2d rules schedule it.

Relax legalizes conv1d to its own TIR kernel, which no tvmflow CPU rule claims; the fallback's
loop nest ran openWakeWord's STFT front end (a conv1d 1 -> 257 channels, kernel 512, stride
160) at under 2 GFLOP/s. The same convolution with a unit height axis is a conv2d the
register-tiled `Conv2d` rule treats as a GEMM over (output channel, output column); grouped
ones too (`PadConvForTiles` then pads its odd channel and column counts). Depthwise conv1d
is left as it is (the depthwise rule tiles rows of a real image). The extra axis costs
nothing: the reshapes are views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm import relax


def _as_conv2d(call: relax.Call) -> relax.Expr | None:
    """The height-1 conv2d equal to an NCW/OIW conv1d `call`, or None when it does not apply."""
    import tvm
    from tvm import relax

    attrs = call.attrs
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCW", "OIW", "NCW"):
        return None
    x, w = call.args
    if len(getattr(x.ty, "shape", None) or ()) != 3 or len(getattr(w.ty, "shape", None) or ()) != 3:
        return None
    groups = int(attrs.groups)
    if groups > 1 and groups == int(x.ty.shape[1]):
        return None  # depthwise: DepthwiseConv2d wants a real height axis (its rows)
    left, right = (int(p) for p in attrs.padding)
    if isinstance(w, tvm.ir.expr.Constant):  # stays a constant, which PadConvForTiles pads
        w = relax.const(w.value.numpy()[:, :, None, :])
    else:
        w = relax.op.expand_dims(w, 2)
    y = relax.op.nn.conv2d(
        relax.op.expand_dims(x, 2),
        w,
        strides=(1, int(attrs.strides[0])),
        padding=(0, left, 0, right),
        dilation=(1, int(attrs.dilation[0])),
        groups=groups,
        data_layout="NCHW",
        kernel_layout="OIHW",
        out_layout="NCHW",
        out_dtype=str(call.ty.dtype),
    )
    return relax.op.squeeze(y, [2])


def Conv1dAsConv2d() -> tvm.transform.Pass:
    """Module pass: rewrite every NCW conv1d as a height-1 conv2d (see the module docstring)."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("Conv1dAsConv2d", [("relax.nn.conv1d", 2)], _as_conv2d)
