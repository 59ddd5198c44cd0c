"""ONNX Scan (opset 8+): the body graph unrolled over the static scan length.

TVM's importer has no Scan (nor loops in Relax dataflow), but with static shapes the number
of iterations is known at import, so the body is converted once per step with the states of
the previous step and that step's slices of the scan inputs (forward or reverse, any axis),
and the per-step scan outputs are stacked (reversed for reverse outputs). Body nodes go
through the same converter table as the main graph, at the model's opset, and see the outer
graph's values. The graph grows with the scan length: fine for decode steps and short
sequences, heavy for long ones. Scan-8 (a batch axis first, no sequence_lens) unrolls per
batch row too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Layout:
    """Where the scan runs: per scan input its axis and direction, per scan output its own."""

    in_axes: list[int]
    in_dirs: list[int]
    out_axes: list[int]
    out_dirs: list[int]


def unroll(
    bb: Any,
    body: onnx.GraphProto,
    states: list[Expr],
    sequences: list[Expr],
    layout: Layout,
    params: Any,
    opset: int,
) -> list[Expr]:
    """The final states, then each scan output stacked over the steps."""
    n_states = len(states)
    in_axes = [a % len(shape(x)) for a, x in zip(layout.in_axes, sequences, strict=True)]
    steps = shape(sequences[0])[in_axes[0]]
    names = [i.name for i in body.input]
    collected: list[list[Expr]] = [[] for _ in layout.out_axes]
    for t in range(steps):
        feeds = dict(zip(names[:n_states], states, strict=True))
        for name, x, axis, reverse in zip(
            names[n_states:], sequences, in_axes, layout.in_dirs, strict=True
        ):
            feeds[name] = _step(bb, x, axis, steps - 1 - t if reverse else t)
        results = run_graph(bb, body, feeds, params, opset)
        states = results[:n_states]
        for k, items in enumerate(collected):
            items.append(results[n_states + k])
    stacked = []
    for items, axis, reverse in zip(collected, layout.out_axes, layout.out_dirs, strict=True):
        items = items[::-1] if reverse else items
        rank = len(shape(items[0])) + 1
        stacked.append(bb.emit(relax.op.stack(items, axis=axis % rank)))
    return [*states, *stacked]


class Scan(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset: int) -> Callable[..., Expr]:
        def convert(bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
            if opset < 9:
                return cls._batched(bb, inputs, attr, params, opset)
            return cls._scan(bb, inputs, attr, params, opset)

        return convert

    @classmethod
    def _scan(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any, opset: int) -> Expr:
        body: onnx.GraphProto = attr["body"]
        scans = int(attr["num_scan_inputs"])
        states = list(inputs)[: len(inputs) - scans]
        outputs = len(body.output) - len(states)
        layout = Layout(
            [int(a) for a in attr.get("scan_input_axes", [0] * scans)],
            [int(d) for d in attr.get("scan_input_directions", [0] * scans)],
            [int(a) for a in attr.get("scan_output_axes", [0] * outputs)],
            [int(d) for d in attr.get("scan_output_directions", [0] * outputs)],
        )
        sequences = list(inputs)[len(inputs) - scans :]
        return relax.Tuple(unroll(bb, body, states, sequences, layout, params, opset))

    @classmethod
    def _batched(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any, opset: int) -> Expr:
        """Scan-8: a leading batch axis on every input and output, the scan axis second."""
        body: onnx.GraphProto = attr["body"]
        scans = int(attr["num_scan_inputs"])
        if inputs[0] is not None:
            raise ValueError("Scan (opset 8) with sequence_lens is not supported; drop it")
        values = list(inputs)[1:]
        n_states = len(values) - scans
        outputs = len(body.output) - n_states
        layout = Layout(
            [0] * scans,
            [int(d) for d in attr.get("directions", [0] * scans)],
            [0] * outputs,
            [0] * outputs,
        )
        per_batch = [
            unroll(
                bb,
                body,
                [_step(bb, x, 0, b) for x in values[:n_states]],
                [_step(bb, x, 0, b) for x in values[n_states:]],
                layout,
                params,
                opset,
            )
            for b in range(shape(values[0])[0])
        ]
        return relax.Tuple(
            [bb.emit(relax.op.stack(list(r), axis=0)) for r in zip(*per_batch, strict=True)]
        )


CONVERTERS = (Converter("Scan", Scan, since=8),)
