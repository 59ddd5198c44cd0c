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
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.common import run_graph, shape

Expr = Any


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
