"""ONNX GRU (opsets 7-22): gates z, r, h; `linear_before_reset`; outputs Y and Y_h."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.recurrent import Expr, activations, parse, run


class GRU(OnnxOpConverter):
    """Y, Y_h of a GRU node (opset 14 added `layout`, handled for every version)."""

    @classmethod
    def _impl_v7(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        rec = parse(bb, inputs, attr, "GRU", num_states=1)
        spec = replace(
            rec.spec,
            acts=activations(
                attr, ("sigmoid", "tanh"), len(rec.spec.directions), rec.spec.compute_dtype
            ),
            linear_before_reset=bool(attr.get("linear_before_reset", 0)),
        )
        return relax.Tuple(run(rec, spec))


CONVERTERS = (Converter("GRU", GRU, since=7, until=22),)
