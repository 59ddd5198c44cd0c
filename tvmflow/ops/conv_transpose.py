"""ONNX ConvTranspose with `output_shape` (opset 1+): TVM's converter ignores the attribute and
returns the natural size, so the output came out smaller than the model declares. The spec
turns `output_shape` into pads (total = stride*(in-1) + output_padding + (k-1)*d + 1 - out,
split by `auto_pad`); a negative end pad is extra output rows, i.e. more output_padding.
Everything else stays TVM's converter."""

from __future__ import annotations

from typing import Any

from tvm.relax.frontend.onnx.onnx_frontend import ConvTranspose as TvmConvTranspose
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


def pads_for_output_shape(
    in_sizes: list[int], attr: dict[str, Any], kernel: list[int]
) -> tuple[list[int], list[int]]:
    """(pads begin+end, output_padding) that give `attr["output_shape"]` per the ONNX spec."""
    dims = len(in_sizes)
    out = list(attr["output_shape"])[-dims:]
    strides = list(attr.get("strides", [1] * dims))
    dilations = list(attr.get("dilations", [1] * dims))
    extra = list(attr.get("output_padding", [0] * dims))
    auto_pad = attr.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    begin, end = [], []
    for i in range(dims):
        natural = strides[i] * (in_sizes[i] - 1) + extra[i] + (kernel[i] - 1) * dilations[i] + 1
        total = natural - out[i]
        first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        last = total - first
        if first < 0:  # output larger than the kernel's reach at the start: no such conv
            raise ValueError(f"ConvTranspose output_shape {out} needs negative leading pads")
        if last < 0:  # the extra rows at the end are output_padding
            extra[i] -= last
            last = 0
        begin.append(first)
        end.append(last)
    return begin + end, extra


class ConvTranspose(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        if "output_shape" in attr:
            attr = dict(attr)
            spatial = [int(d) for d in inputs[0].ty.shape.values[2:]]
            kernel = list(attr.get("kernel_shape", []))
            if not kernel:
                kernel = [int(d) for d in inputs[1].ty.shape.values[2:]]
            attr["pads"], attr["output_padding"] = pads_for_output_shape(spatial, attr, kernel)
            attr.pop("output_shape")
            attr.pop("auto_pad", None)
        return TvmConvTranspose._impl_v1(bb, inputs, attr, params)


CONVERTERS = (Converter("ConvTranspose", ConvTranspose, since=1, replaces=True),)
