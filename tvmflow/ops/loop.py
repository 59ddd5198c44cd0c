"""ONNX Loop (opset 1+) with a constant trip count: the body unrolled, iteration by iteration.

Relax dataflow has no loops, but a constant trip count M makes the iterations known at
import: each one converts the body (`common.run_graph`) with its iteration number as a
constant (so index arithmetic folds), the running condition and the carried values. When
the body's condition folds to a constant, the loop simply stops there; when it depends on
data, each carried value keeps its last value once the condition has turned false (a
`where` per iteration), and scan outputs are refused (their length would be data-
dependent). M and the initial condition may be arithmetic on constants (`common.fold`);
a loop whose M is data is refused as unsupported: its iteration count is unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from tvmflow.errors import TvmflowError
from tvmflow.ops import Converter
from tvmflow.ops.common import fold, run_graph

Expr = Any
_DYNAMIC_SCANS = (
    "unsupported operators: Loop with scan outputs and a data-dependent exit condition (the "
    "outputs' length would be data); export the loop with a constant condition"
)


def _constant_bool(expr: Expr) -> bool | None:
    return bool(expr.value.numpy()) if isinstance(expr, tvm.ir.GenericConst) else None


class Loop(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset: int) -> Callable[..., Expr]:
        def convert(bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
            return cls._unroll(bb, inputs, attr, params, opset)

        return convert

    @classmethod
    def _unroll(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any, opset: int) -> Expr:
        op = relax.op
        body: onnx.GraphProto = attr["body"]
        trips = fold(bb, get_constant(inputs[0], params)) if inputs[0] is not None else None
        if trips is None:
            raise TvmflowError(
                f"unsupported operators: Loop with a data-dependent trip count M (node "
                f"{attr['tvm_custom']['name']!r}); tvmflow unrolls loops, so M must be known at "
                "compile time: export with a fixed trip count, or --freeze the inputs it comes from"
            )
        cond: Expr = relax.const(True)
        if inputs[1] is not None:
            known = fold(bb, get_constant(inputs[1], params))
            cond = relax.const(bool(known)) if known is not None else inputs[1]
        carried = list(inputs)[2:]
        n_carried = len(carried)
        n_scans = len(body.output) - 1 - n_carried
        names = [i.name for i in body.input]
        running: Expr = cond
        scans: list[list[Expr]] = [[] for _ in range(n_scans)]
        for t in range(int(trips.reshape(()))):
            if _constant_bool(running) is False:
                break
            feeds = {
                names[0]: relax.const(np.int64(t), "int64"),
                names[1]: running,
                **dict(zip(names[2:], carried, strict=True)),
            }
            results = run_graph(bb, body, feeds, params, opset)
            new_cond, new_carried = results[0], results[1 : 1 + n_carried]
            if _constant_bool(running) is None:  # data-dependent: keep values once stopped
                new_carried = [
                    bb.emit(op.where(running, new, old))
                    for new, old in zip(new_carried, carried, strict=True)
                ]
                new_cond = bb.emit(op.logical_and(running, new_cond))
            elif _constant_bool(new_cond) is None and n_scans:
                raise TvmflowError(_DYNAMIC_SCANS)
            carried = new_carried
            for k, items in enumerate(scans):
                items.append(results[1 + n_carried + k])
            running = new_cond
        if _constant_bool(running) is None and n_scans:
            raise TvmflowError(_DYNAMIC_SCANS)
        if any(not items for items in scans):
            raise TvmflowError(
                "unsupported operators: Loop that runs no iteration but has scan outputs "
                "(empty tensors)"
            )
        stacked = [bb.emit(op.stack(items, axis=0)) for items in scans]
        return relax.Tuple([*carried, *stacked])


CONVERTERS = (Converter("Loop", Loop, since=1),)
