"""ONNX GRU (opsets 7-22): gates z, r, h; `linear_before_reset`; outputs Y and Y_h."""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.recurrent import Expr, activations, gate, parse, recurrence, run


class GRU(OnnxOpConverter):
    """Y, Y_h of a GRU node (opset 14 added `layout`, handled for every version)."""

    @classmethod
    def _impl_v7(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        rec = parse(bb, inputs, attr, num_states=1)
        acts = activations(attr, ("sigmoid", "tanh"), len(rec.directions), rec.dtype)
        linear_before_reset = bool(attr.get("linear_before_reset", 0))
        size = rec.hidden
        one = relax.const(1.0, rec.dtype)

        def cell(x: Expr, states: list[Expr], d: int) -> list[Expr]:
            (h,) = states
            f_act, g_act = acts[d]
            zr = rec.emit(op.add(gate(x, 0, 2 * size), recurrence(rec, h, d, 0, 2)))
            z = rec.emit(f_act(rec.clipped(rec.emit(gate(zr, 0, size)))))
            r = rec.emit(f_act(rec.clipped(rec.emit(gate(zr, 1, size)))))
            if linear_before_reset:
                hidden = op.multiply(r, recurrence(rec, h, d, 2, 1))
            else:
                hidden = recurrence(rec, rec.emit(op.multiply(r, h)), d, 2, 1)
            pre = rec.emit(op.add(gate(x, 2, size), hidden))
            candidate = rec.emit(g_act(rec.clipped(pre)))
            h_new = op.add(op.multiply(op.subtract(one, z), candidate), op.multiply(z, h))
            return [rec.emit(h_new)]

        return relax.Tuple(run(rec, 1, cell))


CONVERTERS = (Converter("GRU", GRU, since=7, until=22),)
