"""Lowering pass: a stride-1 dilated conv2d as one undilated conv over its input's phases.

Output row o of a stride-1 conv with dilation d reads padded input rows o + d*k, so the
outputs of one phase r = o mod d read only the input rows of that phase: each phase is an
ordinary undilated conv over every d-th row. Here the (zero-padded) input is split into its
dh*dw row/column phases, stacked into the batch (space-to-batch), convolved once without
dilation and interleaved back (batch-to-space). The conv rules then take it: plcmos-v2's
3x3 dilation-(2, 1) convs ran at 43-46 GFLOP/s as dilated convs (21 of its 23 ms); undilated
they are Winograd's or the register-tiled Conv2d's.

When the phases are padded out to equal lengths, each phase computes outputs past the real
ones (sliced off). On small maps with large dilations that waste dominates (DeepLabV3's
dilation-12 ASPP conv on a 16x16 map: 2.25x the multiply-adds), so a conv is rewritten only
when the phases compute at most `MAX_WASTE` times its real outputs. The split and the
merge each move the input and output maps once more, which a depthwise conv (few
multiply-adds per element) does not earn back: lraspp_mobilenet_v3's dilated 5x5 depthwise
convs over phases were 1.10x slower end to end. So a conv needs `MIN_MACS_PER_MOVED`
multiply-adds per input+output channel at a position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm import relax

MAX_WASTE = 1.1  # computed / real outputs above which the dilated conv stays as it is
MIN_MACS_PER_MOVED = 32


@dataclass(frozen=True)
class PhaseAxis:
    """One spatial axis of the rewrite: `dilation` phases of `length // dilation` rows each
    after padding the input by `before` / `after` (zeros); the conv itself pads `conv_pad`
    (an undilated axis keeps its padding in the conv); `out` real output rows."""

    dilation: int
    before: int
    after: int
    conv_pad: tuple[int, int]
    length: int
    out: int
    computed: int


def phase_axis(size: int, kernel: int, dilation: int, pad: tuple[int, int]) -> PhaseAxis:
    """How one axis of `size` with a stride-1 `kernel` at `dilation` splits into phases."""
    out = size + pad[0] + pad[1] - dilation * (kernel - 1)
    if dilation == 1:
        return PhaseAxis(1, 0, 0, pad, size, out, out)
    padded = size + pad[0] + pad[1]
    length = -(-padded // dilation) * dilation  # every phase as long as the longest
    computed = dilation * (length // dilation - kernel + 1)
    return PhaseAxis(dilation, pad[0], length - pad[0] - size, (0, 0), length, out, computed)


def _phases(call: relax.Call) -> relax.Expr | None:
    """`call` (an NCHW/OIHW stride-1 dilated conv2d, static shapes) over its input's
    phases, or None when it is not one or the phases would cost more than they save."""
    import tvm
    from tvm import relax

    attrs = call.attrs
    x, w = call.args
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    dilation = [int(d) for d in attrs.dilation]
    if max(dilation) == 1 or any(int(s) != 1 for s in attrs.strides):
        return None
    shapes = [getattr(e.ty, "shape", None) for e in (x, w)]
    if any(s is None or len(s) != 4 for s in shapes):
        return None
    if not all(isinstance(d, tvm.tirx.IntImm) for s in shapes for d in s):  # type: ignore[union-attr]
        return None
    (n, c, h, wd), (k, per_group, kh, kw) = ([int(d) for d in s] for s in shapes)  # type: ignore[union-attr]
    if per_group * kh * kw * k < MIN_MACS_PER_MOVED * (c + k):
        return None
    pads = [int(p) for p in attrs.padding]  # top, left, bottom, right
    rows = phase_axis(h, kh, dilation[0], (pads[0], pads[2]))
    cols = phase_axis(wd, kw, dilation[1], (pads[1], pads[3]))
    if min(rows.out, cols.out) <= 0:
        return None
    if rows.computed * cols.computed > MAX_WASTE * rows.out * cols.out:
        return None
    dh, dw = rows.dilation, cols.dilation
    padded = relax.op.nn.pad(x, [0, 0, 0, 0, rows.before, rows.after, cols.before, cols.after])
    split = relax.op.reshape(padded, [n, c, rows.length // dh, dh, cols.length // dw, dw])
    batched = relax.op.reshape(
        relax.op.permute_dims(split, [3, 5, 0, 1, 2, 4]),
        [dh * dw * n, c, rows.length // dh, cols.length // dw],
    )
    conv = relax.op.nn.conv2d(
        batched,
        w,
        strides=1,
        padding=(rows.conv_pad[0], cols.conv_pad[0], rows.conv_pad[1], cols.conv_pad[1]),
        dilation=1,
        groups=attrs.groups,
        data_layout="NCHW",
        kernel_layout="OIHW",
        out_layout="NCHW",
        out_dtype=str(call.ty.dtype),
    )
    qh, qw = rows.computed // dh, cols.computed // dw
    merged = relax.op.reshape(
        relax.op.permute_dims(relax.op.reshape(conv, [dh, dw, n, k, qh, qw]), [2, 3, 4, 0, 5, 1]),
        [n, k, rows.computed, cols.computed],
    )
    if (rows.computed, cols.computed) == (rows.out, cols.out):
        return merged
    return relax.op.strided_slice(merged, axes=[2, 3], begin=[0, 0], end=[rows.out, cols.out])


def DilatedConvAsPhases() -> tvm.transform.Pass:
    """Module pass: every stride-1 dilated conv2d over its input phases (module docstring)."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("DilatedConvAsPhases", [("relax.nn.conv2d", 2)], _phases)
