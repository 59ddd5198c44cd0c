"""ONNX LSTM (opsets 7-22): gates i, o, f, c; peepholes P; `input_forget`; three outputs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.recurrent import Expr, activations, parse, run


class LSTM(OnnxOpConverter):
    """Y, Y_h, Y_c of an LSTM node (opset 14 added `layout`, handled for every version)."""

    @classmethod
    def _impl_v7(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        rec = parse(bb, inputs, attr, "LSTM", num_states=2)
        peepholes = inputs[7] if len(inputs) > 7 else None
        spec = replace(
            rec.spec,
            acts=activations(
                attr,
                ("sigmoid", "tanh", "tanh"),
                len(rec.spec.directions),
                rec.spec.compute_dtype,
            ),
            input_forget=bool(attr.get("input_forget", 0)),
            peepholes=peepholes is not None,
        )
        return relax.Tuple(run(rec, spec, peepholes))


CONVERTERS = (Converter("LSTM", LSTM, since=7, until=22),)
