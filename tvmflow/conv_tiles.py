"""Lowering pass: pad a conv2d's output channels and columns to what the register tile needs.

The CPU `Conv2d` rule is a GEMM micro-kernel over (output column m, output channel n) whose
tile sizes must divide m and n exactly (no tail loops that would break vectorization). A
prime or odd count therefore degrades it: 257 channels (an STFT's frequency bins) ran with
no vectors at all, 1000 (a classifier conv) with one 8-lane vector per row, and 13 or 97
columns with one-row tiles (one broadcast per vector FMA). Here a constant weight gets
zero filters up to whole vectors (folded at compile time), the input's right padding grows
until the output columns are a multiple of 8, 7 or 6 (rows of a tile), and the extra
channels and columns are sliced off the result: a few percent more multiply-adds for
full tiles. Depthwise convs get columns only: `DepthwiseConv2dRows` vectorizes along the
output row, so rows of 14 or 28 become 16 or 32 (`padded_row`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tvmflow.schedules.cpu_depthwise_conv2d_rows import padded_row

if TYPE_CHECKING:
    import tvm
    from tvm import relax

# An output row this short is a squeeze-excite or 1x1-map conv: padding it would multiply its
# work for no tile gain.
MIN_COLUMNS = 8


def _channel_padding(channels: int, lanes: int) -> int:
    """Zero filters to add: up to whole vectors, and to a vector count the tile's 2 or 3
    vectors per row divide (17 vectors, as 257 channels make, would allow only 1)."""
    if channels % lanes == 0:
        return 0
    vectors = -(-channels // lanes)
    if vectors > 1 and vectors % 2 and vectors % 3:
        vectors += 1
    return vectors * lanes - channels


def _padded(call: relax.Call, lanes: int) -> relax.Expr | None:
    """`call` (an NCHW/OIHW conv2d) with padded channels/columns, or None when it is fine."""
    import tvm
    from tvm import relax

    attrs = call.attrs
    x, w = call.args
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW"):
        return None
    out_shape = getattr(call.ty, "shape", None)
    if out_shape is None or len(out_shape) != 4:
        return None
    if not all(isinstance(d, tvm.tirx.IntImm) for d in out_shape):
        return None
    channels, columns = int(out_shape[1]), int(out_shape[3])
    if int(attrs.groups) != 1:
        if not _is_depthwise(call):
            return None
        extra = 0
        stride = int(attrs.strides[1])
        more = (padded_row(columns, stride, lanes) - columns) * stride
        if stride == 2 and _odd_padded_row(call) and int(w.ty.shape[3]) % 2:
            more += 1  # the row rule splits stride-2 rows in two phases; same outputs
    else:
        extra = _channel_padding(channels, lanes) if isinstance(w, tvm.ir.expr.Constant) else 0
        more = 0
        if columns >= MIN_COLUMNS and not any(columns % r == 0 for r in range(4, 9)):
            more = next(p for p in range(1, 8) if any((columns + p) % r == 0 for r in (8, 7, 6)))
            more *= int(attrs.strides[1])
    if not (extra or more):
        return None
    if extra:
        w = relax.const(np.pad(w.value.numpy(), [(0, extra), (0, 0), (0, 0), (0, 0)]))
    top, left, bottom, right = (int(p) for p in attrs.padding)
    y = relax.op.nn.conv2d(
        x,
        w,
        strides=attrs.strides,
        padding=(top, left, bottom, right + more),
        dilation=attrs.dilation,
        groups=attrs.groups,
        data_layout="NCHW",
        kernel_layout="OIHW",
        out_layout="NCHW",
        out_dtype=str(call.ty.dtype),
    )
    span = int(attrs.dilation[1]) * (int(w.ty.shape[3]) - 1) + 1
    if (
        not extra
        and (int(x.ty.shape[3]) + left + right + more - span) // int(attrs.strides[1]) + 1
        == columns
    ):
        return y  # only an evened row: the same outputs
    return relax.op.strided_slice(y, axes=[1, 3], begin=[0, 0], end=[channels, columns])


def _is_depthwise(call: relax.Call) -> bool:
    """One filter per input channel (`DepthwiseConv2dRows`' kind), no dilation."""
    groups = int(call.attrs.groups)
    x_shape, w_shape = call.args[0].ty.shape, call.args[1].ty.shape
    return (
        int(x_shape[1]) == groups
        and int(w_shape[0]) == groups
        and int(w_shape[1]) == 1
        and all(int(d) == 1 for d in call.attrs.dilation)
    )


def _odd_padded_row(call: relax.Call) -> bool:
    _, left, _, right = (int(p) for p in call.attrs.padding)
    return (int(call.args[0].ty.shape[3]) + left + right) % 2 == 1


def PadConvForTiles(lanes: int) -> tvm.transform.Pass:
    """Module pass: pad every conv2d that needs it (see the module docstring); `lanes`: the
    target's fp32 vector width, which padded channel counts are a multiple of."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass(
        "PadConvForTiles", [("relax.nn.conv2d", 2)], lambda call: _padded(call, lanes)
    )
