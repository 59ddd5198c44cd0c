"""ONNX Scan (opset 9+): the body graph unrolled over the static scan length.

TVM's importer has no Scan (nor loops in Relax dataflow), but with static shapes the number
of iterations is known at import, so the body is converted once per step with the states of
the previous step and that step's slices of the scan inputs (forward or reverse, any axis),
and the per-step scan outputs are stacked (reversed for reverse outputs). Body nodes go
through the same converter table as the main graph, at the model's opset, and see the outer
graph's values. The graph grows with the scan length: fine for decode steps and short
sequences, heavy for long ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, onnx_input

from tvmflow.ops import Converter
from tvmflow.ops.common import shape

Expr = Any


def run_graph(
    bb: Any, graph: onnx.GraphProto, feeds: dict[str, Expr], params: Any, opset: int
) -> list[Expr]:
    """Convert `graph`'s nodes into `bb` with its inputs bound to `feeds`; its outputs."""
    outer, weights = params
    values: dict[str, Expr] = {**outer, **feeds}
    for init in graph.initializer:
        values[init.name] = relax.const(onnx.numpy_helper.to_array(init))
    table = onnx_frontend._get_convert_map()
    for node in graph.node:
        if node.op_type not in table:
            raise ValueError(f"Scan body: operator {node.op_type} has no converter")
        attr = onnx_frontend.ONNXGraphImporter._parse_attr(None, node.attribute)  # type: ignore[arg-type]
        attr["tvm_custom"] = {"name": node.name, "num_outputs": len(node.output)}
        inputs = onnx_input(values[name] if name else None for name in node.input)
        out = table[node.op_type].get_converter(opset)(bb, inputs, attr, [values, weights])
        if isinstance(out, relax.Expr) and not isinstance(out, relax.Tuple):
            out = bb.normalize(out)
            if isinstance(out.ty, relax.TupleType):
                out = relax.Tuple([relax.TupleGetItem(out, i) for i in range(len(out.ty.fields))])
        if isinstance(out, relax.Tuple):
            for name, item in zip(node.output, out.fields, strict=False):
                values[name] = bb.emit(item)
        else:
            values[node.output[0]] = out
    return [values[o.name] for o in graph.output]


def _step(bb: Any, x: Expr, axis: int, index: int) -> Expr:
    """Slice `index` of `x` along `axis`, that axis dropped."""
    piece = relax.op.strided_slice(x, [axis], [index], [index + 1])
    return bb.emit(relax.op.squeeze(piece, [axis]))


class Scan(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset: int) -> Callable[..., Expr]:
        def convert(bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
            return cls._unroll(bb, inputs, attr, params, opset)

        return convert

    @classmethod
    def _unroll(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any, opset: int) -> Expr:
        body: onnx.GraphProto = attr["body"]
        scans = int(attr["num_scan_inputs"])
        states = list(inputs)[: len(inputs) - scans]
        sequences = list(inputs)[len(inputs) - scans :]
        n_states = len(states)
        n_outputs = len(body.output) - n_states
        in_axes = [int(a) for a in attr.get("scan_input_axes", [0] * scans)]
        in_dirs = [int(d) for d in attr.get("scan_input_directions", [0] * scans)]
        out_axes = [int(a) for a in attr.get("scan_output_axes", [0] * n_outputs)]
        out_dirs = [int(d) for d in attr.get("scan_output_directions", [0] * n_outputs)]
        in_axes = [a % len(shape(x)) for a, x in zip(in_axes, sequences, strict=True)]
        steps = shape(sequences[0])[in_axes[0]]
        names = [i.name for i in body.input]
        collected: list[list[Expr]] = [[] for _ in range(n_outputs)]
        for t in range(steps):
            feeds = dict(zip(names[:n_states], states, strict=True))
            for name, x, axis, reverse in zip(
                names[n_states:], sequences, in_axes, in_dirs, strict=True
            ):
                feeds[name] = _step(bb, x, axis, steps - 1 - t if reverse else t)
            results = run_graph(bb, body, feeds, params, opset)
            states = results[:n_states]
            for k in range(n_outputs):
                collected[k].append(results[n_states + k])
        stacked = []
        for items, axis, reverse in zip(collected, out_axes, out_dirs, strict=True):
            items = items[::-1] if reverse else items
            rank = len(shape(items[0])) + 1
            stacked.append(bb.emit(relax.op.stack(items, axis=int(np.int64(axis) % rank))))
        return relax.Tuple([*states, *stacked])


CONVERTERS = (Converter("Scan", Scan, since=9),)
