"""ONNX MaxPool (opset 8+) with its second output, Indices, which TVM's converter does not
produce ("Missing outputs ... Expected 2 but Got 1"). The pooled values stay TVM's; the
indices (2-D pools) are the argmax over the kernel's offsets, each offset one strided slice
of the input padded with the lowest value, turned into flat positions of the unpadded input
(row-major, or column-major with `storage_order=1`), first maximum in scan order as ONNX's
reference takes it."""

from __future__ import annotations

from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any


def _pads(attr: dict[str, Any], size: int, out: int, k: int, s: int, d: int, i: int) -> int:
    """The leading pad of spatial axis `i` (explicit, or from auto_pad)."""
    auto = attr.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        return total // 2 if auto == "SAME_UPPER" else total - total // 2
    if auto == "VALID":
        return 0
    return int(attr.get("pads", [0] * 4)[i])


def _i64(values: Any) -> Expr:
    """An int64 constant (relax.const alone makes int64 data int32)."""
    return relax.const(np.asarray(values, np.int64), "int64")


def _indices(bb: Any, x: Expr, y: Expr, attr: dict[str, Any]) -> Expr:
    op = relax.op
    n, c, h, w = (int(v) for v in x.ty.shape.values)
    oh, ow = (int(v) for v in y.ty.shape.values[2:])
    kh, kw = (int(v) for v in attr["kernel_shape"])
    sh, sw = (int(v) for v in attr.get("strides", [1, 1]))
    dh, dw = (int(v) for v in attr.get("dilations", [1, 1]))
    pt = _pads(attr, h, oh, kh, sh, dh, 0)
    pl = _pads(attr, w, ow, kw, sw, dw, 1)
    need_h, need_w = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    dtype = str(x.ty.dtype)
    lowest = float(np.finfo(dtype).min) if dtype.startswith("float") else float(np.iinfo(dtype).min)
    pad_width = [0, 0, 0, 0, pt, max(0, need_h - h - pt), pl, max(0, need_w - w - pl)]
    padded = bb.emit(op.nn.pad(x, pad_width, pad_value=lowest))
    offsets = [(a * dh, b * dw) for a in range(kh) for b in range(kw)]
    windows = [
        op.strided_slice(
            padded, [2, 3], [a, b], [a + (oh - 1) * sh + 1, b + (ow - 1) * sw + 1], [sh, sw]
        )
        for a, b in offsets
    ]
    best = bb.emit(op.argmax(op.stack(windows, 0), axis=0))  # [n, c, oh, ow]
    rows = _i64([a for a, _ in offsets])
    cols = _i64([b for _, b in offsets])
    base_h = _i64((np.arange(oh) * sh - pt).reshape(oh, 1))
    base_w = _i64((np.arange(ow) * sw - pl).reshape(1, ow))
    row = op.add(op.take(rows, best, axis=0), base_h)
    col = op.add(op.take(cols, best, axis=0), base_w)
    plane = _i64((np.arange(n * c) * h * w).reshape(n, c, 1, 1))
    if int(attr.get("storage_order", 0)):
        flat = op.add(row, op.multiply(col, relax.const(h, "int64")))
    else:
        flat = op.add(op.multiply(row, relax.const(w, "int64")), col)
    return op.add(plane, flat)


class MaxPool(OnnxOpConverter):
    @classmethod
    def get_converter(cls, opset: int) -> Any:
        inner = onnx_frontend.MaxPool.get_converter(opset)

        def convert(bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
            wants_indices = attr.get("tvm_custom", {}).get("num_outputs", 1) > 1
            y = inner(bb, inputs, attr, params)
            x = inputs[0]
            if not wants_indices or len(x.ty.shape.values) != 4:
                return y
            y = bb.emit(y)
            return relax.Tuple([y, bb.emit(_indices(bb, x, y, attr))])

        return convert


CONVERTERS = (Converter("MaxPool", MaxPool, since=1, replaces=True),)
