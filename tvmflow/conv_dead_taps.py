"""Lowering pass: drop the kernel taps of a conv2d that only ever read its zero padding.

A dilated conv on a map smaller than its dilation reads the padding with every off-center
tap: DeepLabV3's ASPP branches (dilation 12, 24, 36, padding = dilation) on MobileNetV3's
16x16 map at 256x256 input are, for dilations 24 and 36, exactly 1x1 convs, yet ran as
3x3 convs: 9x the multiply-adds, 17 of tvmflow's 39 ms (3.0x onnxruntime). Here each axis
keeps only the contiguous range of taps that read the input for some output position; the
padding shrinks by what the dropped taps spanned, so the output is the same (the dropped
terms were all weight * 0). A conv left with one tap per axis is an undilated 1x1 conv,
which the GEMM rule runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm import relax


def live_taps(
    size: int, out: int, kernel: int, stride: int, dilation: int, before: int
) -> range | None:
    """The taps (as a range) between the first and the last that read inside an input axis
    of `size` for some of the `out` output positions, or None when all of them do."""
    live = [
        k
        for k in range(kernel)
        if any(0 <= o * stride - before + k * dilation < size for o in range(out))
    ]
    if not live or (live[0] == 0 and live[-1] == kernel - 1):
        return None
    return range(live[0], live[-1] + 1)


def static_spatial(call: relax.Call) -> tuple[list[int], list[int], list[int]] | None:
    """The input, kernel and output (height, width) of a 4-D conv2d whose shapes are all
    static, or None (the dead-tap and tap-region rewrites need numbers to decide)."""
    import tvm

    x, w = call.args
    shapes = [getattr(e.ty, "shape", None) for e in (x, w, call)]
    if any(s is None or len(s) != 4 for s in shapes):
        return None
    if not all(isinstance(d, tvm.tirx.IntImm) for s in shapes for d in s):  # type: ignore[union-attr]
        return None
    (_, _, *size), (_, _, *kernel), (_, _, *out) = ([int(d) for d in s] for s in shapes)  # type: ignore[union-attr]
    return size, kernel, out


def _trimmed(call: relax.Call) -> relax.Expr | None:
    """`call` (an NCHW/OIHW conv2d with static shapes) without its dead taps, or None."""
    import tvm
    from tvm import relax

    attrs = call.attrs
    x, w = call.args
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    spatial = static_spatial(call)
    if spatial is None:
        return None
    size, kernel, out = spatial
    pads = [int(p) for p in attrs.padding]  # top, left, bottom, right
    dilation = [int(d) for d in attrs.dilation]
    strides = [int(s) for s in attrs.strides]
    taps = []
    for axis in (0, 1):
        kept = live_taps(
            size[axis], out[axis], kernel[axis], strides[axis], dilation[axis], pads[axis]
        )
        taps.append(kept or range(kernel[axis]))
    if all(len(t) == k for t, k in zip(taps, kernel, strict=True)):
        return None
    before = [pads[a] - taps[a].start * dilation[a] for a in (0, 1)]
    after = [pads[a + 2] - (kernel[a] - taps[a].stop) * dilation[a] for a in (0, 1)]
    if min(before + after) < 0:
        return None  # the kept taps would need a cropped input: leave it
    (h0, h1), (w0, w1) = (taps[0].start, taps[0].stop), (taps[1].start, taps[1].stop)
    if isinstance(w, tvm.ir.GenericConst):
        w = relax.const(w.value.numpy()[:, :, h0:h1, w0:w1])
    else:
        w = relax.op.strided_slice(w, axes=[2, 3], begin=[h0, w0], end=[h1, w1])
    return relax.op.nn.conv2d(
        x,
        w,
        strides=strides,
        padding=(before[0], before[1], after[0], after[1]),
        dilation=[d if len(t) > 1 else 1 for d, t in zip(dilation, taps, strict=True)],
        groups=attrs.groups,
        data_layout="NCHW",
        kernel_layout="OIHW",
        out_layout="NCHW",
        out_dtype=str(call.ty.dtype),
    )


def DropDeadConvTaps() -> tvm.transform.Pass:
    """Module pass: trim every conv2d's padding-only taps (see the module docstring)."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("DropDeadConvTaps", [("relax.nn.conv2d", 2)], _trimmed)
