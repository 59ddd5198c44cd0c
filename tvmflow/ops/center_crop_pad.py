"""ONNX CenterCropPad (opset 18): crop or zero-pad each listed axis to a constant size, centred.

As onnx's reference, a crop starts at (dim - size) // 2 and a pad puts (size - dim) // 2 zeros
before (the odd one after): one strided slice, then one pad.
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.common import required, shape

Expr = Any


class CenterCropPad(OnnxOpConverter):
    @classmethod
    def _impl_v18(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        x = inputs[0]
        sizes = [int(v) for v in required(inputs[1], params, "CenterCropPad shape").reshape(-1)]
        dims = shape(x)
        axes = [int(a) % len(dims) for a in attr.get("axes", range(len(dims)))]
        crop_axes, begins, ends = [], [], []
        widths = [0] * (2 * len(dims))
        for axis, size in zip(axes, sizes, strict=True):
            dim = dims[axis]
            if size < dim:
                crop_axes.append(axis)
                begins.append((dim - size) // 2)
                ends.append((dim - size) // 2 + size)
            elif size > dim:
                widths[2 * axis] = (size - dim) // 2
                widths[2 * axis + 1] = size - dim - (size - dim) // 2
        if crop_axes:
            x = bb.emit(relax.op.strided_slice(x, crop_axes, begins, ends))
        return relax.op.nn.pad(x, widths) if any(widths) else x


CONVERTERS = (Converter("CenterCropPad", CenterCropPad, since=18),)
