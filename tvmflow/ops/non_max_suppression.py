"""ONNX NonMaxSuppression (opset 10+) as one kernel of tvmflow's, exactly as ONNX defines it.

TVM's converter typed its output with the padded size, suppressed at IoU >= the threshold
(ONNX: >), never at a threshold of 0, took 0.5 for an absent threshold (ONNX: 0), dropped
scores <= 0 when none was given, needed constant thresholds, and sized its output from a
constant box count: torchvision's detectors pick candidates per class with NonZero and TopK
before one NMS, so the count is known only at run time (its legalization failed, or padded
the output to 2**63 boxes per class for their "no limit").

Here the scores are sorted per (batch, class) with `argsort` (descending, stable: equal
scores keep the lower box first, as onnxruntime orders them) and one serial kernel walks each
list greedily as onnxruntime does: a candidate scoring above the score threshold is kept
unless its IoU with a box already kept in its class exceeds the threshold, until the class
has `max_output_boxes_per_class`. The kept boxes are written as [batch, class, box] rows in
that order; the output is trimmed to their number, a symbolic dim (data-dependent, as ONNX
defines it). Thresholds and the limit are read at run time. Work is O(candidates x kept)
per class, as in onnxruntime.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter
from tvm.script import tirx as T

from tvmflow.ops import Converter
from tvmflow.ops.common import size_var
from tvmflow.ops.recurrent_kernel import KERNEL_ATTR

Expr = Any


def nms_kernel(center_point_box: bool, filter_scores: bool) -> tvm.tirx.PrimFunc:
    """The greedy selection over sorted candidates (see the module docstring); box
    coordinates are corners in any order, or centers and sizes (`center_point_box`)."""

    @T.macro
    def extent(box: Any, b: Any, i: Any, axis: int, out: Any, slot: int) -> None:
        # the box's [low, high] on one axis (ONNX: x is coordinate 1 of corners, 0 of centers)
        if center_point_box:
            half = box[b, i, axis + 2] / T.float32(2)
            out[slot] = box[b, i, axis] - half
            out[slot + 1] = box[b, i, axis] + half
        else:
            out[slot] = T.min(box[b, i, axis], box[b, i, axis + 2])
            out[slot + 1] = T.max(box[b, i, axis], box[b, i, axis + 2])

    @T.prim_func(s_tir=True)
    def kernel(
        var_boxes: T.handle,
        var_scores: T.handle,
        var_order: T.handle,
        limit: T.Buffer((1,), "int64"),  # type: ignore[valid-type]
        iou_threshold: T.Buffer((1,), "float32"),  # type: ignore[valid-type]
        score_threshold: T.Buffer((1,), "float32"),  # type: ignore[valid-type]
        var_out: T.handle,
        count: T.Buffer((1,), "int64"),  # type: ignore[valid-type]
    ) -> None:
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, KERNEL_ATTR: True})
        batch, classes, n = T.int64(), T.int64(), T.int64()
        boxes = T.match_buffer(var_boxes, (batch, n, 4), "float32")
        scores = T.match_buffer(var_scores, (batch, classes, n), "float32")
        order = T.match_buffer(var_order, (batch, classes, n), "int64")
        out = T.match_buffer(var_out, (batch * classes * n, 3), "int64")
        # rows written, kept in this class, next candidate, candidate suppressed (0/1)
        state = T.alloc_buffer((4,), "int64", scope="local")
        # candidate's x low/high, y low/high, then the kept box's
        edges = T.alloc_buffer((8,), "float32", scope="local")
        state[0] = T.int64(0)
        for b in range(batch):
            for c in range(classes):
                first = state[0]
                state[1] = T.int64(0)
                state[2] = T.int64(0)
                while state[2] < n and state[1] < limit[0]:
                    i = order[b, c, state[2]]
                    if filter_scores and scores[b, c, i] <= score_threshold[0]:
                        state[2] = n  # sorted: no later candidate passes either
                    else:
                        extent(boxes, b, i, 1 - T.int64(center_point_box), edges, 0)
                        extent(boxes, b, i, T.int64(center_point_box), edges, 2)
                        state[3] = T.int64(0)
                        for k in range(state[1]):
                            j = out[first + k, 2]
                            extent(boxes, b, j, 1 - T.int64(center_point_box), edges, 4)
                            extent(boxes, b, j, T.int64(center_point_box), edges, 6)
                            wide = T.min(edges[1], edges[5]) - T.max(edges[0], edges[4])
                            high = T.min(edges[3], edges[7]) - T.max(edges[2], edges[6])
                            inter = wide * high
                            area = (edges[1] - edges[0]) * (edges[3] - edges[2])
                            other = (edges[5] - edges[4]) * (edges[7] - edges[6])
                            union = area + other - inter
                            if (
                                wide > T.float32(0)
                                and high > T.float32(0)
                                and area > T.float32(0)
                                and other > T.float32(0)
                                and union > T.float32(0)
                                and inter / union > iou_threshold[0]
                            ):
                                state[3] = T.int64(1)
                        if state[3] == T.int64(0):
                            out[state[0], 0] = b
                            out[state[0], 1] = c
                            out[state[0], 2] = i
                            state[0] = state[0] + T.int64(1)
                            state[1] = state[1] + T.int64(1)
                        state[2] = state[2] + T.int64(1)
        count[0] = state[0]

    return kernel.without_attr("global_symbol")  # the module names it (bb.add_func)


def _scalar(bb: Any, value: Expr | None, dtype: str, default: float) -> Expr:
    """An optional scalar input as a [1] tensor of `dtype` (`default` where absent)."""
    if value is None:
        return relax.const(np.array([default]), dtype)
    return bb.normalize(relax.op.astype(relax.op.reshape(value, [1]), dtype))


def _typed(bb: Any, boxes: Expr, scores: Expr) -> tuple[Expr, Expr]:
    """Boxes [batch, n, 4] and scores [batch, classes, n] in float32, their dims typed as
    static values or plain symbolic ones (data-dependent counts reach NMS untyped or as long
    sums of per-class counts)."""

    def dim(axis: int, name: str) -> Any:
        shape = scores.ty.shape
        if shape is not None and isinstance(shape.values[axis], tvm.tirx.IntImm):
            return shape.values[axis]
        return size_var(name)

    def plain(x: Expr) -> bool:
        shape = x.ty.shape
        return shape is not None and all(
            isinstance(d, (tvm.tirx.IntImm, tvm.tirx.Var)) for d in shape.values
        )

    if not (plain(boxes) and plain(scores)):
        batch, classes, n = dim(0, "nms_batch"), dim(1, "nms_classes"), dim(2, "nms_boxes")
        boxes = bb.match_cast(boxes, relax.TensorType([batch, n, 4], boxes.ty.dtype))
        scores = bb.match_cast(scores, relax.TensorType([batch, classes, n], scores.ty.dtype))
    return (
        bb.normalize(relax.op.astype(boxes, "float32")),
        bb.normalize(relax.op.astype(scores, "float32")),
    )


class NonMaxSuppression(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        inputs = list(inputs) + [None] * (5 - len(inputs))
        boxes, scores = _typed(bb, inputs[0], inputs[1])
        batch, classes, n = scores.ty.shape.values
        order = bb.emit(relax.op.argsort(scores, axis=2, descending=True, dtype="int64"))
        kernel = bb.add_func(
            nms_kernel(bool(attr.get("center_point_box", 0)), inputs[4] is not None),
            "non_max_suppression",
        )
        found = bb.emit(
            relax.call_tir(
                kernel,
                [
                    boxes,
                    scores,
                    order,
                    _scalar(bb, inputs[2], "int64", 0),
                    _scalar(bb, inputs[3], "float32", 0.0),
                    _scalar(bb, inputs[4], "float32", 0.0),
                ],
                [
                    relax.TensorType([batch * classes * n, 3], "int64"),
                    relax.TensorType([1], "int64"),
                ],
            )
        )
        rows = bb.emit(relax.TupleGetItem(found, 0))
        count = bb.emit(relax.TupleGetItem(found, 1))
        ends = bb.emit(relax.op.concat([count, relax.const(np.array([3]), "int64")]))
        kept = bb.emit(
            relax.op.dynamic_strided_slice(
                rows,
                relax.const(np.zeros(2), "int64"),
                ends,
                relax.const(np.ones(2), "int64"),
            )
        )
        selected = size_var("num_selected")
        return bb.match_cast(kept, relax.TensorType([selected, 3], "int64"))


CONVERTERS = (Converter("NonMaxSuppression", NonMaxSuppression, since=10, replaces=True),)
