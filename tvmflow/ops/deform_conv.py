"""ONNX DeformConv (opset 19), 2-D: a convolution whose taps sample at learned offsets.

Each output position's kernel tap (i, j) of offset group g reads the input at
(oh * stride - pad + i * dilation + dy, ow * stride - pad + j * dilation + dx), bilinearly
(corners outside the image count as zero, as onnx's reference GridSample with
align_corners), scaled by the optional mask. The samples (an im2col with fractional
positions: four gathers weighted per corner) then meet the weights in one grouped matmul.
Offsets and masks are runtime tensors; shapes are static.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.common import optional, shape

Expr = Any


class DeformConv(OnnxOpConverter):
    @classmethod
    def _impl_v19(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        x, w, offset = inputs[0], inputs[1], inputs[2]
        bias, mask = optional(inputs, 3), optional(inputs, 4)
        n, channels, height, width = shape(x)
        out_channels, _, kh, kw = shape(w)
        if len(shape(x)) != 4:
            raise ValueError("DeformConv: only 2-D inputs (N, C, H, W) are supported")
        oh, ow = shape(offset)[2:]
        groups, offset_groups = int(attr.get("group", 1)), int(attr.get("offset_group", 1))
        sh, sw = (int(s) for s in attr.get("strides", (1, 1)))
        dh, dw = (int(d) for d in attr.get("dilations", (1, 1)))
        ph, pw = (int(p) for p in attr.get("pads", (0, 0, 0, 0))[:2])
        dtype = str(x.ty.dtype)
        taps, pixels = kh * kw, oh * ow
        # tap positions before the offsets: [taps, pixels]
        base_y = (np.arange(oh) * sh - ph)[None, :, None] + (np.arange(kh) * dh)[:, None, None]
        base_x = (np.arange(ow) * sw - pw)[None, None, :] + (np.arange(kw) * dw)[:, None, None]
        base_y = np.broadcast_to(base_y[:, None], (kh, kw, oh, ow)).reshape(taps, pixels)
        base_x = np.broadcast_to(base_x[None], (kh, kw, oh, ow)).reshape(taps, pixels)
        offset = bb.emit(op.reshape(offset, [n, offset_groups, taps, 2, pixels]))

        def part(index: int) -> Expr:
            piece = op.strided_slice(offset, [3], [index], [index + 1])
            return bb.emit(op.squeeze(piece, [3]))  # [n, offset_groups, taps, pixels]

        y = bb.emit(op.add(part(0), relax.const(base_y.astype(dtype))))
        xs = bb.emit(op.add(part(1), relax.const(base_x.astype(dtype))))
        y0, x0 = bb.emit(op.floor(y)), bb.emit(op.floor(xs))
        fy, fx = bb.emit(op.subtract(y, y0)), bb.emit(op.subtract(xs, x0))
        one = relax.const(1.0, dtype)
        per_group = channels // offset_groups
        image = bb.emit(op.reshape(x, [n, offset_groups, per_group, height * width]))
        samples = None
        for cy, wy in ((0, op.subtract(one, fy)), (1, fy)):
            for cx, wx in ((0, op.subtract(one, fx)), (1, fx)):
                yy = op.add(y0, relax.const(float(cy), dtype))
                xx = op.add(x0, relax.const(float(cx), dtype))
                inside = op.logical_and(
                    op.logical_and(
                        op.greater_equal(yy, relax.const(0.0, dtype)),
                        op.less(yy, relax.const(float(height), dtype)),
                    ),
                    op.logical_and(
                        op.greater_equal(xx, relax.const(0.0, dtype)),
                        op.less(xx, relax.const(float(width), dtype)),
                    ),
                )
                weight = bb.emit(op.multiply(op.multiply(wy, wx), op.astype(inside, dtype)))
                row = op.clip(op.astype(yy, "int64"), 0, height - 1)
                col = op.clip(op.astype(xx, "int64"), 0, width - 1)
                flat = op.add(op.multiply(row, relax.const(width, "int64")), col)
                flat = op.reshape(flat, [n, offset_groups, 1, taps * pixels])
                index = bb.emit(op.broadcast_to(flat, [n, offset_groups, per_group, taps * pixels]))
                picked = op.gather_elements(image, index, axis=3)
                weight = op.reshape(weight, [n, offset_groups, 1, taps * pixels])
                term = bb.emit(op.multiply(picked, weight))
                samples = term if samples is None else bb.emit(op.add(samples, term))
        if mask is not None:
            mask = op.reshape(mask, [n, offset_groups, 1, taps * pixels])
            samples = bb.emit(op.multiply(samples, mask))
        per_conv_group = channels // groups
        columns = op.reshape(samples, [n, groups, per_conv_group * taps, pixels])
        kernel = op.reshape(w, [1, groups, out_channels // groups, per_conv_group * taps])
        out = bb.emit(op.matmul(kernel, bb.emit(columns)))  # [n, groups, oc/groups, pixels]
        out = op.reshape(out, [n, out_channels, oh, ow])
        if bias is not None:
            out = op.add(bb.emit(out), op.reshape(bias, [1, out_channels, 1, 1]))
        return out


CONVERTERS = (Converter("DeformConv", DeformConv, since=19),)
