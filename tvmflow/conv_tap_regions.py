"""Lowering pass: a stride-1 dilated conv2d whose taps mostly read padding as a sum of 1x1
convs, one per tap, each over only the output region where that tap reads the input.

DeepLabV3's dilation-12 ASPP conv (960 -> 256 channels) on MobileNetV3's 16x16 map keeps
every tap live for some outputs (so `conv_dead_taps` cannot drop any), yet each off-center
tap reads the map for only 4 of the 16 rows or columns: 75% of its multiply-adds are by
padding zeros, and as a dilated direct conv it ran at ~31 GFLOP/s, 74% of the model's kernel
time. Per tap (i, j) the live outputs are a rectangle, and the tap's contribution there is a
1x1 conv (a GEMM, which the GEMM rules run fast) over the matching input rectangle; the
contributions, zero-padded to the output's extent, sum to the conv. Rewritten only when the
live tap-outputs are at most `MAX_LIVE_FRACTION` of the dense conv's (else the direct or
phase-split conv, `conv_phases`, is the better kernel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm import relax

MAX_LIVE_FRACTION = 0.5


def live_outputs(size: int, out: int, tap: int, dilation: int, before: int) -> range:
    """The output positions (stride 1) at which `tap` reads inside an input axis of `size`."""
    shift = tap * dilation - before  # output o reads input o + shift
    return range(max(0, -shift), min(out, size - shift))


def _tap_sum(call: relax.Call) -> relax.Expr | None:
    """`call` (an NCHW/OIHW stride-1 dilated dense conv2d, constant weight, static shapes)
    as the sum of its taps' live regions, or None when it is not one or they are dense."""
    import tvm
    from tvm import relax

    from tvmflow.conv_dead_taps import static_spatial

    attrs = call.attrs
    x, w = call.args
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    dilation = [int(d) for d in attrs.dilation]
    if max(dilation) == 1 or any(int(s) != 1 for s in attrs.strides) or int(attrs.groups) != 1:
        return None
    if not isinstance(w, tvm.ir.GenericConst):
        return None
    spatial = static_spatial(call)
    if spatial is None:
        return None
    size, kernel, out = spatial
    pads = [int(p) for p in attrs.padding]  # top, left, bottom, right
    regions = [
        [live_outputs(size[a], out[a], t, dilation[a], pads[a]) for t in range(kernel[a])]
        for a in (0, 1)
    ]
    live = sum(len(r) for r in regions[0]) * sum(len(r) for r in regions[1])
    if live > MAX_LIVE_FRACTION * kernel[0] * kernel[1] * out[0] * out[1]:
        return None
    weight = w.value.numpy()
    total: relax.Expr | None = None
    for i, rows in enumerate(regions[0]):
        for j, cols in enumerate(regions[1]):
            if not rows or not cols:
                continue
            top = rows.start + i * dilation[0] - pads[0]
            left = cols.start + j * dilation[1] - pads[1]
            window = relax.op.strided_slice(
                x, axes=[2, 3], begin=[top, left], end=[top + len(rows), left + len(cols)]
            )
            term = relax.op.nn.conv2d(
                window,
                relax.const(weight[:, :, i : i + 1, j : j + 1]),
                out_dtype=str(call.ty.dtype),
            )
            widths = [rows.start, out[0] - rows.stop, cols.start, out[1] - cols.stop]
            if any(widths):
                term = relax.op.nn.pad(term, [0, 0, 0, 0, *widths])
            total = term if total is None else relax.op.add(total, term)
    return total


def ConvAsTapRegions() -> tvm.transform.Pass:
    """Module pass: mostly-padding dilated conv2ds as per-tap 1x1 convs (module docstring)."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("ConvAsTapRegions", [("relax.nn.conv2d", 2)], _tap_sum)
