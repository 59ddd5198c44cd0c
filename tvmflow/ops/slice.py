"""ONNX Slice of opsets 1-9, whose starts / ends / axes are attributes: TVM's converter only
implements the input form of opset 10+ and fails on the attribute form ("Cannot cast
NoneType to list of Expr"; AECMOS's opset-9 export slices its GRUs' initial states so)."""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


class Slice(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        x = inputs[0]
        starts = [int(s) for s in attr["starts"]]
        ends = [int(e) for e in attr["ends"]]
        axes = [int(a) for a in attr.get("axes", range(len(starts)))]
        return bb.emit(relax.op.strided_slice(x, axes, starts, ends))


CONVERTERS = (Converter("Slice", Slice, since=1, until=9, replaces=True),)
