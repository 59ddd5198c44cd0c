"""ONNX ReduceMax / ReduceMin (all opsets) over booleans and over empty sets.

TVM's converters fail to build on bool ("Cannot decide min_value for bool") and reduce an
empty axis to garbage; ONNX defines the empty reduction as the identity (-inf or the type's
minimum for Max, +inf or its maximum for Min). Booleans reduce as uint8 here; an empty input
(its shape is static) is a constant. Everything else goes to TVM's converter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter, get_constant

from tvmflow.ops import Converter

Expr = Any


def _axes(inputs: Any, attr: dict[str, Any], params: Any, opset: int) -> list[int] | None:
    """The reduced axes (None: every axis, or none under noop_with_empty_axes)."""
    if opset < 18:
        axes = attr.get("axes")
        return None if axes is None else [int(a) for a in axes]
    if len(inputs) > 1 and inputs[1] is not None:
        value = get_constant(inputs[1], params)
        if not isinstance(value, tvm.ir.GenericConst):
            raise ValueError("Reduce needs constant axes")
        axes = [int(a) for a in np.asarray(value.value.numpy()).reshape(-1)]
        return axes or None
    return None


def _identity(dtype: np.dtype, largest: bool) -> Any:
    if dtype == np.bool_:
        return largest
    if np.issubdtype(dtype, np.floating):
        return np.inf if largest else -np.inf
    info = np.iinfo(dtype)
    return info.max if largest else info.min


def _reducer(name: str, tvm_converter: type, np_reduce: Callable[..., Any], largest: bool) -> type:
    def get_converter(cls: type, opset: int) -> Callable[..., Expr]:
        inner = tvm_converter.get_converter(opset)  # type: ignore[attr-defined]

        def convert(bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
            x = inputs[0]
            dtype = str(x.ty.dtype)
            shape = [getattr(v, "value", None) for v in x.ty.shape.values]
            if 0 in shape and None not in shape:  # statically empty (symbolic dims: unknown)
                axes = _axes(inputs, attr, params, opset)
                if axes is None and opset >= 18 and attr.get("noop_with_empty_axes", 0):
                    return x
                np_dtype = np.dtype(dtype)
                out = np_reduce(
                    np.empty(shape, np_dtype),
                    axis=None if axes is None else tuple(axes),
                    keepdims=bool(attr.get("keepdims", 1)),
                    initial=_identity(np_dtype, largest),
                )
                return relax.const(np.asarray(out, np_dtype), dtype)
            if dtype == "bool":
                wide = inner(bb, [relax.op.astype(x, "uint8"), *inputs[1:]], attr, params)
                return relax.op.astype(wide, "bool")
            return inner(bb, inputs, attr, params)

        return convert

    return type(name, (OnnxOpConverter,), {"get_converter": classmethod(get_converter)})


ReduceMax = _reducer("ReduceMax", onnx_frontend.ReduceMax, np.max, largest=False)
ReduceMin = _reducer("ReduceMin", onnx_frontend.ReduceMin, np.min, largest=True)

CONVERTERS = (
    Converter("ReduceMax", ReduceMax, since=1, replaces=True),
    Converter("ReduceMin", ReduceMin, since=1, replaces=True),
)
