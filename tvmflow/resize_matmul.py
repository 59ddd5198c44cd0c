"""Lowering pass: a bilinear resize of a small NCHW map as two matmuls with constant
interpolation matrices (width, then height), and a resize to the same size as nothing.

TVM legalizes resize2d to one gather per tap: per output element it recomputes both source
coordinates (float floor, int64 casts, clamps) and loads four pixels, which vectorizes into
gathers. SegFormer's decode head resizes four token maps to 64x64 and concatenates them:
that kernel took 19 ms, 30% of the model. A linear resize is separable, out = Rh @ x @ Rw.T
with Rh [OH, H] and Rw [OW, W] fixed by the sizes and the coordinate mode, so it can run as
matmuls the matmul rule tiles (for maps up to `MAX_SIDE`, where a dense row of the matrix
costs at most that many multiply-adds per output). A resize that maps every pixel onto
itself (SegFormer resizes its first map to its own size) is the identity. One difference
from the gather: an inf or NaN in the input spreads along its row and column (a zero weight
times inf is NaN), where the gather spreads it to the neighbouring outputs only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tvm
    from tvm import relax

# Input sides up to this use the dense matrices (multiply-adds per output = the input side).
MAX_SIDE = 64
MODES = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel")


def interpolation_matrix(size: int, target: int, mode: str) -> np.ndarray:
    """[target, size] weights of a 1-D linear resize, as TOPI's resize computes them: the
    source coordinate per `mode`, its floor and the next pixel (both clamped to the map)
    weighted by the fraction."""
    x = np.arange(target, dtype=np.float64)
    scale = size / target
    if mode == "half_pixel" or (mode == "pytorch_half_pixel" and target > 1):
        source = (x + 0.5) * scale - 0.5
    elif mode == "pytorch_half_pixel":
        source = np.zeros_like(x)
    elif mode == "align_corners":
        source = (size - 1) / (target - 1) * x
    elif mode == "asymmetric":
        source = scale * x
    else:
        raise ValueError(f"unsupported coordinate mode {mode!r}")
    low = np.floor(source)
    frac = source - low
    low = low.astype(np.int64)
    weights = np.zeros((target, size))
    rows = np.arange(target)
    np.add.at(weights, (rows, np.clip(low, 0, size - 1)), 1 - frac)
    np.add.at(weights, (rows, np.clip(low + 1, 0, size - 1)), frac)
    return weights.astype(np.float32)


def _static_nchw(call: relax.Call) -> tuple[int, int, int, int] | None:
    """(H, W, OH, OW) of a float32 NCHW linear resize2d of static shape this pass
    rewrites, else None."""
    import tvm

    attrs = call.attrs
    if (
        str(attrs.method) != "linear"
        or str(attrs.layout) != "NCHW"
        or str(attrs.coordinate_transformation_mode) not in MODES
        or str(getattr(call.ty, "dtype", "")) != "float32"
        or str(getattr(call.args[0].ty, "dtype", "")) != "float32"
    ):
        return None
    in_shape = getattr(call.args[0].ty, "shape", None)
    out_shape = getattr(call.ty, "shape", None)
    if in_shape is None or out_shape is None:
        return None
    dims = [*in_shape.values, *out_shape.values]
    if len(dims) != 8 or not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    _, _, h, w, _, _, oh, ow = (int(d) for d in dims)
    if str(attrs.coordinate_transformation_mode) == "align_corners" and min(oh, ow) < 2:
        return None  # TOPI divides by target - 1
    return h, w, oh, ow


def _as_matmuls(call: relax.Call) -> relax.Expr | None:
    from tvm import relax

    shape = _static_nchw(call)
    if shape is None:
        return None
    h, w, oh, ow = shape
    mode = str(call.attrs.coordinate_transformation_mode)
    rh = interpolation_matrix(h, oh, mode)
    rw = interpolation_matrix(w, ow, mode)
    out = call.args[0]
    identity_w = w == ow and np.array_equal(rw, np.eye(w, dtype=np.float32))
    identity_h = h == oh and np.array_equal(rh, np.eye(h, dtype=np.float32))
    if identity_w and identity_h:
        return out
    if max(h, w) > MAX_SIDE:
        return None
    if not identity_w:
        out = relax.op.matmul(out, relax.const(np.ascontiguousarray(rw.T)))
    if not identity_h:
        out = relax.op.matmul(relax.const(rh), out)
    return out


def ResizeAsMatmul() -> tvm.transform.Pass:
    """Module pass: rewrite every linear NCHW resize2d it can (see the module docstring)."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("ResizeAsMatmul", [("relax.image.resize2d", 2)], _as_matmuls)
