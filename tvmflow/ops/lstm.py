"""ONNX LSTM (opsets 7-22): gates i, o, f, c; peepholes P; `input_forget`; three outputs."""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.recurrent import Expr, activations, gate, parse, recurrence, run


class LSTM(OnnxOpConverter):
    """Y, Y_h, Y_c of an LSTM node (opset 14 added `layout`, handled for every version)."""

    @classmethod
    def _impl_v7(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        rec = parse(bb, inputs, attr, num_states=2)
        peepholes = inputs[7] if len(inputs) > 7 else None
        acts = activations(attr, ("sigmoid", "tanh", "tanh"), len(rec.directions), rec.dtype)
        couple = bool(attr.get("input_forget", 0))
        size = rec.hidden

        def cell(x: Expr, states: list[Expr], d: int) -> list[Expr]:
            h, c = states
            f_act, g_act, h_act = acts[d]
            pre = rec.emit(op.add(x, recurrence(rec, h, d)))  # [B, 4H] in gate order i, o, f, c

            def peep(value: Expr, index: int, cell_state: Expr) -> Expr:
                if peepholes is None:
                    return value
                p = rec.weight(peepholes, d, index * size, (index + 1) * size)
                return op.add(value, op.multiply(p, cell_state))

            i = rec.emit(f_act(rec.clipped(rec.emit(peep(gate(pre, 0, size), 0, c)))))
            if couple:
                f = rec.emit(op.subtract(relax.const(1.0, rec.dtype), i))
            else:
                f = rec.emit(f_act(rec.clipped(rec.emit(peep(gate(pre, 2, size), 2, c)))))
            candidate = rec.emit(g_act(rec.clipped(rec.emit(gate(pre, 3, size)))))
            c_new = rec.emit(op.add(op.multiply(f, c), op.multiply(i, candidate)))
            o = rec.emit(f_act(rec.clipped(rec.emit(peep(gate(pre, 1, size), 1, c_new)))))
            h_new = rec.emit(op.multiply(o, h_act(c_new)))
            return [h_new, c_new]

        return relax.Tuple(run(rec, 2, cell))


CONVERTERS = (Converter("LSTM", LSTM, since=7, until=22),)
