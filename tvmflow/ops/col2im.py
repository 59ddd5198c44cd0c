"""ONNX Col2Im (opset 18): sum sliding blocks (N, C*prod(block), L) back into (N, C, *image).

The image and block shapes are constants, so which column each (kernel offset, pixel) pair
reads is known at import: the op becomes one gather of the columns, a 0/1 mask for the pairs
no block covers, and a sum over kernel offsets, with no scatter (N-D, any strides, pads
and dilations).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.common import required, shape

Expr = Any


def column_index(
    image: list[int],
    block: list[int],
    strides: list[int],
    pads: list[int],
    dilations: list[int],
) -> tuple[np.ndarray, np.ndarray, int]:
    """For every (kernel offset, pixel): the flat column k * L + l it reads and whether one does."""
    rank = len(image)
    blocks = [
        (image[d] + pads[d] + pads[d + rank] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1
        for d in range(rank)
    ]
    length = int(np.prod(blocks))
    offsets = np.array(list(itertools.product(*(range(b) for b in block))))  # (K, rank)
    pixels = np.array(list(itertools.product(*(range(i) for i in image))))  # (P, rank)
    pos = pixels[None, :, :] + np.array(pads[:rank]) - offsets[:, None, :] * np.array(dilations)
    step = pos // np.array(strides)
    valid = (pos % np.array(strides) == 0) & (step >= 0) & (step < np.array(blocks))
    valid = valid.all(axis=-1)
    flat = np.ravel_multi_index(tuple(np.clip(step, 0, np.array(blocks) - 1).T), blocks).T
    index = np.arange(len(offsets))[:, None] * length + flat
    return np.where(valid, index, 0), valid, length


class Col2Im(OnnxOpConverter):
    @classmethod
    def _impl_v18(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        x = inputs[0]
        image = [int(v) for v in required(inputs[1], params, "Col2Im image_shape")]
        block = [int(v) for v in required(inputs[2], params, "Col2Im block_shape")]
        rank = len(image)
        strides = [int(v) for v in attr.get("strides", [1] * rank)]
        pads = [int(v) for v in attr.get("pads", [0] * 2 * rank)]
        dilations = [int(v) for v in attr.get("dilations", [1] * rank)]
        index, valid, length = column_index(image, block, strides, pads, dilations)
        batch, columns, _ = shape(x)
        kernel = int(np.prod(block))
        channels = columns // kernel
        flat = op.reshape(x, [batch, channels, kernel * length])
        gathered = op.take(flat, relax.const(index.astype("int64"), "int64"), axis=2)
        dtype = str(x.ty.dtype)
        summed = op.sum(op.multiply(gathered, relax.const(valid.astype(dtype))), axis=2)
        return op.reshape(bb.emit(summed), [batch, channels, *image])


CONVERTERS = (Converter("Col2Im", Col2Im, since=18),)
