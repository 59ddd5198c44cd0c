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
defines it). Thresholds and the limit are read at run time. Work is at most O(candidates x
kept) per class, as in onnxruntime, and far less where boxes spread along x: a candidate is
compared only with the kept boxes its x extent can reach (`nms_kernel`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter
from tvm.script import tirx as T

from tvmflow.ops import Converter
from tvmflow.ops.common import first_along, size_var
from tvmflow.ops.recurrent_kernel import KERNEL_ATTR

Expr = Any

LANES = 16  # kept boxes compared at once (one AVX-512 vector of float32; LLVM splits it)
BINS = 256  # strips of the batch's x range that kept boxes are filed under, by their x low


def pool_chunks(n: Any) -> Any:
    """Chunks of `LANES` kept boxes the kernel may fill: each strip wastes at most one."""
    return n // LANES + BINS + 1


def nms_kernel(center_point_box: bool, filter_scores: bool) -> tvm.tirx.PrimFunc:
    """The greedy selection over sorted candidates (see the module docstring); box
    coordinates are corners in any order, or centers and sizes (`center_point_box`).

    Each batch's boxes are first brought to [x low, x high, y low, y high, area] (`coords`).
    A class's kept boxes are filed by their x low into `BINS` strips of the batch's x range,
    each strip a linked list of chunks of `LANES` boxes (field-major, in `pool`; `links`
    holds each chunk's next chunk and fill, `heads` each strip's first chunk). A candidate is
    compared only with the strips its x extent can reach (back by twice the widest kept box,
    and a strip more each way for rounding), a chunk at a time without branches, and stops
    at the first chunk that suppresses it. Boxes in other strips cannot overlap it, so the
    selection is the one-by-one one (torchvision's detectors offset each class's boxes apart:
    SSDLite's 27k candidates took ~500 ms compared one by one, ~205 ms a vector at a time
    over every kept box)."""

    @T.macro
    def extent(box: Any, b: Any, i: Any, axis: int, out: Any, slot: int) -> None:
        # the box's [low, high] on one axis (ONNX: x is coordinate 1 of corners, 0 of centers)
        if center_point_box:
            half = box[b, i, axis + 2] / T.float32(2)
            out[i, slot] = box[b, i, axis] - half
            out[i, slot + 1] = box[b, i, axis] + half
        else:
            out[i, slot] = T.min(box[b, i, axis], box[b, i, axis + 2])
            out[i, slot + 1] = T.max(box[b, i, axis], box[b, i, axis + 2])

    def strip(x: Any, low: Any, width: Any) -> Any:
        # x's strip (a PrimExpr, built as the kernel is parsed); NaN and below the range: 0,
        # above it: the last (width: inf where the range is not finite, all in strip 0)
        t = (x - low) / width
        last = tvm.tirx.const(BINS - 1, "int64")
        inside = tvm.tirx.if_then_else(
            t < tvm.tirx.const(BINS, "float32"), tvm.tirx.Cast("int64", t), last
        )
        return tvm.tirx.if_then_else(
            t >= tvm.tirx.const(0, "float32"), inside, tvm.tirx.const(0, "int64")
        )

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
        var_coords: T.handle,
        var_pool: T.handle,
        var_links: T.handle,
        heads: T.Buffer((BINS,), "int64"),  # type: ignore[valid-type]
    ) -> None:
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, KERNEL_ATTR: True})
        batch, classes, n = T.int64(), T.int64(), T.int64()
        boxes = T.match_buffer(var_boxes, (batch, n, 4), "float32")
        scores = T.match_buffer(var_scores, (batch, classes, n), "float32")
        order = T.match_buffer(var_order, (batch, classes, n), "int64")
        out = T.match_buffer(var_out, (batch * classes * n, 3), "int64")
        coords = T.match_buffer(var_coords, (n, 5), "float32")
        pool = T.match_buffer(var_pool, (5, pool_chunks(n) * LANES), "float32")
        links = T.match_buffer(var_links, (2, pool_chunks(n)), "int64")
        # rows written, kept in this class, next candidate, suppressed (0/1), chunk, strip,
        # last strip, next free chunk
        state = T.alloc_buffer((8,), "int64", scope="local")
        # x low of the batch, strip width, widest kept box of the class, x high of the batch
        span = T.alloc_buffer((4,), "float32", scope="local")
        hit = T.alloc_buffer((LANES,), "int32", scope="local")
        state[0] = T.int64(0)
        for b in range(batch):
            span[0] = T.float32("inf")
            span[3] = T.float32("-inf")
            for i in range(n):
                extent(boxes, b, i, 1 - T.int64(center_point_box), coords, 0)
                extent(boxes, b, i, T.int64(center_point_box), coords, 2)
                coords[i, 4] = (coords[i, 1] - coords[i, 0]) * (coords[i, 3] - coords[i, 2])
                if coords[i, 0] < span[0]:
                    span[0] = coords[i, 0]
                if coords[i, 1] > span[3]:
                    span[3] = coords[i, 1]
            span[1] = (span[3] - span[0]) / T.float32(BINS)
            if not (span[1] > T.float32(0) and span[1] < T.float32("inf")):
                span[1] = T.float32("inf")
            for c in range(classes):
                for s in range(BINS):
                    heads[s] = T.int64(-1)
                state[7] = T.int64(0)
                span[2] = T.float32(0)
                state[1] = T.int64(0)
                state[2] = T.int64(0)
                while state[2] < n and state[1] < limit[0]:
                    i = order[b, c, state[2]]
                    if filter_scores and scores[b, c, i] <= score_threshold[0]:
                        state[2] = n  # sorted: no later candidate passes either
                    else:
                        state[3] = T.int64(0)
                        state[5] = T.max(
                            strip(coords[i, 0] - span[2] * T.float32(2), span[0], span[1]) - 1, 0
                        )
                        state[6] = T.min(strip(coords[i, 1], span[0], span[1]) + 1, BINS - 1)
                        while state[5] <= state[6] and state[3] == T.int64(0):
                            state[4] = heads[state[5]]
                            while state[4] >= T.int64(0) and state[3] == T.int64(0):
                                # a chunk without branches (lanes past its fill are masked); a
                                # plain loop LLVM vectorizes: T.vectorized miscompiled the mask
                                for v in T.serial(LANES):
                                    k = state[4] * LANES + v
                                    wide = T.min(coords[i, 1], pool[1, k]) - T.max(
                                        coords[i, 0], pool[0, k]
                                    )
                                    high = T.min(coords[i, 3], pool[3, k]) - T.max(
                                        coords[i, 2], pool[2, k]
                                    )
                                    inter = wide * high
                                    union = coords[i, 4] + pool[4, k] - inter
                                    hit[v] = T.Select(
                                        T.int64(v) < links[1, state[4]]
                                        and wide > T.float32(0)
                                        and high > T.float32(0)
                                        and coords[i, 4] > T.float32(0)
                                        and pool[4, k] > T.float32(0)
                                        and union > T.float32(0)
                                        and inter / union > iou_threshold[0],
                                        1,
                                        0,
                                    )
                                for v in range(LANES):
                                    state[3] = T.max(state[3], T.int64(hit[v]))
                                state[4] = links[0, state[4]]
                            state[5] = state[5] + T.int64(1)
                        if state[3] == T.int64(0):
                            # file it under its strip: in the strip's first chunk, or a new one
                            state[5] = strip(coords[i, 0], span[0], span[1])
                            state[4] = heads[state[5]]
                            if state[4] < T.int64(0) or links[1, state[4]] == T.int64(LANES):
                                links[0, state[7]] = state[4]
                                links[1, state[7]] = T.int64(0)
                                heads[state[5]] = state[7]
                                state[4] = state[7]
                                state[7] = state[7] + T.int64(1)
                            for f in range(5):
                                pool[f, state[4] * LANES + links[1, state[4]]] = coords[i, f]
                            links[1, state[4]] = links[1, state[4]] + T.int64(1)
                            if coords[i, 1] - coords[i, 0] > span[2]:
                                span[2] = coords[i, 1] - coords[i, 0]
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
                    # scratch: each box's extents; a class's kept boxes in chunks, the
                    # chunks' links and fills, the strips' first chunks
                    relax.TensorType([n, 5], "float32"),
                    relax.TensorType([5, pool_chunks(n) * LANES], "float32"),
                    relax.TensorType([2, pool_chunks(n)], "int64"),
                    relax.TensorType([BINS], "int64"),
                ],
            )
        )
        rows = bb.emit(relax.TupleGetItem(found, 0))
        return first_along(bb, rows, 0, bb.emit(relax.TupleGetItem(found, 1)), "num_selected")


CONVERTERS = (Converter("NonMaxSuppression", NonMaxSuppression, since=10, replaces=True),)
