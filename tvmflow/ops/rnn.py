"""ONNX RNN (opsets 7-22): H_t = f(X_t·W^T + H_{t-1}·R^T + Wb + Rb); outputs Y and Y_h."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.recurrent import Expr, activations, parse, run


class RNN(OnnxOpConverter):
    """Y, Y_h of a simple RNN node (opset 14 added `layout`, handled for every version)."""

    @classmethod
    def _impl_v7(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        rec = parse(bb, inputs, attr, "RNN", num_states=1)
        spec = replace(
            rec.spec,
            acts=activations(attr, ("tanh",), len(rec.spec.directions), rec.spec.compute_dtype),
        )
        return relax.Tuple(run(rec, spec))


CONVERTERS = (Converter("RNN", RNN, since=7, until=22),)
