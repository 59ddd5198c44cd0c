"""ONNX TfIdfVectorizer (opset 9): n-gram counts (with skips) of integer token rows, weighted.

The pool of n-grams is an attribute, so every (gram size, skip distance) pair is a constant
gather of windows compared with the pool's grams of that size; matches summed over window
starts give the counts, and a constant one-hot matmul puts them at `ngram_indexes`. As onnx's
reference: unigrams count once, longer grams once per skip distance 1..max_skip_count + 1;
mode TF (counts), IDF (weights, or 1, where a gram occurs) or TFIDF (weights x counts).
Weights follow the spec and onnxruntime (the i-th weight belongs to the pool's i-th gram);
onnx's reference applies them by output column instead.
String pools are refused (TVM has no string tensors).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.common import shape, text

Expr = Any


def pool_grams(pool: list[int], counts: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Gram size → (grams [G, size], their global indexes), from the pool and ngram_counts."""
    grams: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    first = 0
    for i, start in enumerate(counts):
        end = counts[i + 1] if i + 1 < len(counts) else len(pool)
        size = i + 1
        table = np.array(pool[start:end], np.int64).reshape(-1, size)
        grams[size] = (table, np.arange(first, first + len(table)))
        first += len(table)
    return grams


def _matches(bb: Any, x: Expr, grams: np.ndarray, skip: int, length: int) -> Expr | None:
    """Per row, how often each gram occurs at this skip distance: [rows, G] float32."""
    op = relax.op
    size = grams.shape[1]
    starts = length - (size - 1) * skip
    if starts <= 0:
        return None
    positions = np.arange(starts)[:, None] + np.arange(size)[None, :] * skip
    windows = op.take(x, relax.const(positions.astype("int64"), "int64"), axis=1)
    windows = op.expand_dims(bb.emit(windows), 2)  # [rows, starts, 1, size]
    same = op.equal(windows, relax.const(grams[None, None], "int64"))  # [rows, starts, G, size]
    hits = op.sum(op.astype(same, "int32"), axis=3)
    found = op.astype(op.equal(hits, relax.const(size, "int32")), "float32")
    return bb.emit(op.sum(found, axis=1))


class TfIdfVectorizer(OnnxOpConverter):
    @classmethod
    def _impl_v9(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        if attr.get("pool_strings"):
            raise ValueError("TfIdfVectorizer: string pools are not supported (no string tensors)")
        mode = text(attr["mode"])
        if mode not in ("TF", "IDF", "TFIDF"):
            raise ValueError(f"TfIdfVectorizer: mode {mode!r} is not TF, IDF or TFIDF")
        x = inputs[0]
        dims = shape(x)
        rows = x if len(dims) == 2 else op.reshape(x, [1, *dims])
        rows = bb.emit(op.astype(rows, "int64"))
        length = dims[-1]
        indexes = [int(i) for i in attr["ngram_indexes"]]
        width = max(indexes) + 1
        lo, hi = int(attr["min_gram_length"]), int(attr["max_gram_length"])
        skips = int(attr["max_skip_count"]) + 1
        grams = pool_grams([int(v) for v in attr["pool_int64s"]], list(attr["ngram_counts"]))
        total = None
        for size, (table, ids) in grams.items():
            if not lo <= size <= hi or len(table) == 0:
                continue
            found = [_matches(bb, rows, table, d, length) for d in range(1, skips + 1)]
            counts = [f for f in (found[:1] if size == 1 else found) if f is not None]
            if not counts:
                continue
            place = np.zeros((len(table), width), np.float32)
            place[np.arange(len(table)), np.array(indexes)[ids]] = 1.0
            summed = counts[0]
            for more in counts[1:]:
                summed = op.add(summed, more)
            placed = bb.emit(op.matmul(summed, relax.const(place)))
            total = placed if total is None else bb.emit(op.add(total, placed))
        batch = shape(rows)[0]
        y = total if total is not None else relax.const(np.zeros((batch, width), np.float32))
        weights = attr.get("weights")
        w = None
        if weights:  # the i-th weight scales the i-th gram of the pool (its output column)
            placed_weights = np.zeros(width, np.float32)
            placed_weights[indexes] = np.array(weights, np.float32)[: len(indexes)]
            w = relax.const(placed_weights)
        if mode == "IDF":
            y = op.astype(op.greater(y, relax.const(0.0, "float32")), "float32")
        if mode != "TF" and w is not None:
            y = op.multiply(y, w)
        return op.reshape(bb.emit(y), [width]) if len(dims) == 1 else y


CONVERTERS = (Converter("TfIdfVectorizer", TfIdfVectorizer, since=9),)
