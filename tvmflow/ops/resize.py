"""ONNX Resize (opset 10+) where TVM's `resize2d` computes something else.

TVM maps an output pixel back with in/out, ONNX with the given scale (they differ when
in * scale is not a whole number: every downsample by 0.6 or 0.8 was wrong); it has no
antialias, no `half_pixel_symmetric`, no `axes`, no `keep_aspect_ratio_policy`, and
`align_corners` onto one output pixel divides by zero. Those cases are computed here
instead, exactly as ONNX defines them: resizing is separable, so each resized axis is a
constant [out, in] interpolation matrix, built at import time by onnx's own reference
implementation of one axis and applied as K gathered taps per output (1 nearest, 2 linear,
4 cubic, more with antialias). The cases TVM gets right keep its fused kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from tvmflow.ops import Converter

Expr = Any
_TVM_COORDINATE_MODES = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel")
_MAX_TAPS = 8  # more taps per output (a large antialiased downsample): a dense matmul


@dataclass(frozen=True)
class _Params:
    """A Resize node's attributes and constant inputs, with `axes` expanded to every dim."""

    mode: str
    coordinate_mode: str
    nearest_mode: str
    cubic_coeff_a: float
    exclude_outside: bool
    extrapolation_value: float
    antialias: bool
    scales: tuple[float, ...]  # per dim, as ONNX's coordinate transform uses them
    sizes: tuple[int, ...]  # per dim, the output shape
    roi: tuple[float, ...] | None  # starts then ends, per dim

    shape: tuple[int, ...]  # the input's

    @property
    def resized(self) -> list[int]:
        """The dims whose output differs from the input (in size, scale or region)."""
        return [
            d
            for d in range(len(self.shape))
            if not (
                math.isclose(self.scales[d], 1.0)
                and self.sizes[d] == self.shape[d]
                and self._identity_roi(d)
            )
        ]

    def _identity_roi(self, dim: int) -> bool:
        if self.roi is None or self.coordinate_mode != "tf_crop_and_resize":
            return True
        rank = len(self.shape)
        return math.isclose(self.roi[dim], 0.0) and math.isclose(self.roi[rank + dim], 1.0)


def _constant(expr: Expr, params: Any) -> np.ndarray | None:
    """The value of an optional constant input; None when absent or empty."""
    if expr is None:
        return None
    value = get_constant(expr, params)
    if isinstance(value, tvm.ir.GenericConst):
        array = np.asarray(value.value.numpy())
    elif isinstance(value, relax.ShapeExpr):
        array = np.array([int(v) for v in value.values], np.int64)
    else:
        raise _NotConstant
    return array if array.size else None


class _NotConstant(Exception):
    """An input that is computed at run time: TVM's converter handles those."""


def _params(
    shape: Sequence[int], inputs: Sequence[Expr], attr: dict[str, Any], params: Any
) -> _Params:
    """ONNX's rules for the output size and the per-axis scale (`_interpolate_nd`'s)."""
    rank = len(shape)

    def text(key: str, default: str) -> str:
        value = attr.get(key, default)
        return value.decode("ascii") if isinstance(value, bytes) else str(value)

    roi = _constant(inputs[1], params) if len(inputs) > 1 else None
    scales = _constant(inputs[2], params) if len(inputs) > 2 else None
    sizes = _constant(inputs[3], params) if len(inputs) > 3 else None
    axes = [int(a) % rank for a in attr.get("axes", range(rank))]
    full_scales = [1.0] * rank
    full_sizes = list(shape)
    full_roi = [0.0] * rank + [1.0] * rank
    if roi is not None:
        for i, d in enumerate(axes):
            full_roi[d], full_roi[rank + d] = float(roi[i]), float(roi[len(axes) + i])
    if sizes is not None:
        for i, d in enumerate(axes):
            full_sizes[d] = int(sizes[i])
        full_scales = [full_sizes[d] / shape[d] for d in range(rank)]
        policy = text("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            scale = pick(full_scales[d] for d in axes)
            full_scales = [scale if d in axes else 1.0 for d in range(rank)]
            full_sizes = [
                int(scale * shape[d] + 0.5) if d in axes else shape[d] for d in range(rank)
            ]
    elif scales is not None:
        for i, d in enumerate(axes):
            full_scales[d] = float(scales[i])
        full_sizes = [int(full_scales[d] * shape[d]) for d in range(rank)]
    else:
        raise ValueError("Resize needs scales or sizes")
    return _Params(
        mode=text("mode", "nearest"),
        coordinate_mode=text("coordinate_transformation_mode", "half_pixel"),
        nearest_mode=text("nearest_mode", "round_prefer_floor"),
        cubic_coeff_a=float(attr.get("cubic_coeff_a", -0.75)),
        exclude_outside=bool(attr.get("exclude_outside", 0)),
        extrapolation_value=float(attr.get("extrapolation_value", 0.0)),
        antialias=bool(attr.get("antialias", 0)),
        scales=tuple(full_scales),
        sizes=tuple(full_sizes),
        roi=tuple(full_roi) if roi is not None else None,
        shape=tuple(shape),
    )


def _tvm_computes_it(p: _Params, shape: Sequence[int], attr: dict[str, Any]) -> bool:
    """Whether TVM's resize kernel gives ONNX's result: its spatial dims only, the output
    size in * scale exactly (TVM maps back with in/out), modes it implements."""
    rank = len(shape)
    return (
        rank in (3, 4, 5)
        and "axes" not in attr
        and not p.antialias
        and p.coordinate_mode in _TVM_COORDINATE_MODES
        and all(d >= 2 for d in p.resized)
        and all(
            math.isclose(p.sizes[d], p.scales[d] * shape[d])
            and (p.coordinate_mode != "align_corners" or p.sizes[d] > 1)
            for d in range(rank)
        )
    )


def _coeffs(p: _Params) -> Callable[[float, float], np.ndarray]:
    from onnx.reference.ops import op_resize

    if p.mode == "nearest":
        return lambda ratio, scale: op_resize._nearest_coeffs(ratio, mode=p.nearest_mode)
    if p.mode == "cubic":
        cubic = op_resize._cubic_coeffs_antialias if p.antialias else op_resize._cubic_coeffs
        return lambda ratio, scale: cubic(ratio, scale, A=p.cubic_coeff_a)
    if p.mode == "linear":
        return op_resize._linear_coeffs_antialias if p.antialias else op_resize._linear_coeffs
    raise ValueError(f"Resize: unknown mode {p.mode!r}")


def axis_matrix(p: _Params, dim: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """One axis of the resize as ([out, in] weights, [out] extrapolated mask), computed by
    onnx's reference implementation on the identity (each input position's response)."""
    from onnx.reference.ops import op_resize

    rank = len(p.sizes)
    roi = None if p.roi is None else [p.roi[dim], p.roi[rank + dim]]

    def run(data: np.ndarray, extrapolation: float) -> np.ndarray:
        return op_resize._interpolate_1d_along_axis(
            data,
            1,
            p.scales[dim],
            p.sizes[dim],
            _coeffs(p),
            roi=roi,
            extrapolation_value=extrapolation,
            coordinate_transformation_mode=p.coordinate_mode,
            exclude_outside=p.exclude_outside,
        )

    weights = run(np.eye(length), 0.0).T
    outside = run(np.zeros((1, length)), 1.0)[0] != 0
    return weights, outside


def _resize_axis(bb: Any, x: Expr, p: _Params, dim: int, dtype: str) -> Expr:
    """x with axis `dim` resized (x in the compute dtype)."""
    op = relax.op
    shape = [int(v) for v in x.ty.shape.values]
    weights, outside = axis_matrix(p, dim, shape[dim])
    taps = max(int(np.count_nonzero(row)) for row in weights) if weights.size else 0
    out = None
    broadcast = [1] * len(shape)
    broadcast[dim] = p.sizes[dim]
    if taps <= _MAX_TAPS:
        order = np.argsort(weights == 0, axis=1, kind="stable")[:, : max(taps, 1)]
        picked = np.take_along_axis(weights, order, axis=1)
        for k in range(order.shape[1]):
            gathered = op.take(x, relax.const(order[:, k].astype(np.int64), "int64"), axis=dim)
            if p.mode == "nearest" and taps == 1 and np.all(picked[:, 0] == 1):
                out = gathered
                break
            w = relax.const(picked[:, k].reshape(broadcast).astype(dtype), dtype)
            term = bb.emit(op.multiply(gathered, w))
            out = term if out is None else bb.emit(op.add(out, term))
    else:  # dense: move the axis last, multiply by [in, out]
        perm = [d for d in range(len(shape)) if d != dim] + [dim]
        back = list(np.argsort(perm))
        moved = op.permute_dims(x, perm)
        mixed = op.matmul(moved, relax.const(weights.T.astype(dtype), dtype))
        out = op.permute_dims(mixed, [int(i) for i in back])
    out = bb.emit(out)
    if outside.any():
        mask = relax.const(outside.reshape(broadcast))
        out = bb.emit(op.where(mask, relax.const(p.extrapolation_value, dtype), out))
    return out


def _resize(bb: Any, x: Expr, p: _Params) -> Expr:
    dtype = str(x.ty.dtype)
    integer = not dtype.startswith(("float", "bfloat"))
    compute = "float32" if integer or dtype in ("float16", "bfloat16") else dtype
    if p.mode == "nearest":  # a selection: any dtype, no arithmetic
        compute = dtype
    y = x if compute == dtype else bb.emit(relax.op.astype(x, compute))
    for dim in p.resized:
        y = _resize_axis(bb, y, p, dim, compute)
    if compute == dtype:
        return y
    if integer:  # onnx's saturate_cast: round, clip to the type's range
        info = np.iinfo(np.dtype(dtype))
        y = relax.op.clip(relax.op.round(y), float(info.min), float(info.max))
    return relax.op.astype(y, dtype)


class Resize(OnnxOpConverter):
    @classmethod
    def _impl_v10(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        # opset 10: (X, scales), coordinates "asymmetric" (TVM's converter reads opset 18's)
        attr = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor", **attr}
        return cls._convert(bb, [inputs[0], None, inputs[1]], attr, params, tvm_ok=False)

    @classmethod
    def _impl_v11(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        return cls._convert(bb, inputs, attr, params, tvm_ok=True)

    @classmethod
    def _convert(
        cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any, tvm_ok: bool
    ) -> Expr:
        x = inputs[0]
        shape = [int(v) for v in x.ty.shape.values]
        try:
            p = _params(shape, inputs, attr, params)
        except _NotConstant:
            return onnx_frontend.Resize._impl_v18(bb, inputs, attr, params)
        if tvm_ok and _tvm_computes_it(p, shape, attr):
            return onnx_frontend.Resize._impl_v18(bb, inputs, attr, params)
        return _resize(bb, x, p)


class Upsample(OnnxOpConverter):
    """Upsample (opsets 7-9, deprecated since 10): Resize of opset 10 with its modes."""

    @classmethod
    def _impl_v7(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        scales = relax.const(np.asarray(attr.pop("scales"), np.float32))
        return Resize._impl_v10(bb, [inputs[0], scales], attr, params)

    @classmethod
    def _impl_v9(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        return Resize._impl_v10(bb, inputs, attr, params)


CONVERTERS = (
    Converter("Resize", Resize, since=10, replaces=True),
    Converter("Upsample", Upsample, since=7, until=9, replaces=True),
)
