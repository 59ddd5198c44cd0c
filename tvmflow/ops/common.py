"""Helpers shared by the converters: static shapes, constant inputs, optional inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm.relax.frontend.onnx.onnx_frontend import get_constant

Expr = Any


def shape(x: Expr) -> list[int]:
    """The static shape of a Relax tensor expression."""
    return [int(v) for v in x.ty.shape.values]


def optional(inputs: Any, index: int) -> Expr | None:
    """Input `index`, or None when the node leaves it out."""
    return inputs[index] if len(inputs) > index and inputs[index] is not None else None


def constant(expr: Expr | None, params: Any, what: str) -> np.ndarray | None:
    """The value of a constant input (None when absent); refuses a computed one."""
    if expr is None:
        return None
    value = get_constant(expr, params)
    if not isinstance(value, tvm.ir.GenericConst):
        raise ValueError(f"{what} must be a constant (an initializer), not computed")
    return np.asarray(value.value.numpy())


def required(expr: Expr | None, params: Any, what: str) -> np.ndarray:
    """The value of a constant input the op cannot do without."""
    value = constant(expr, params, what)
    if value is None:
        raise ValueError(f"{what} is required")
    return value


def text(value: Any) -> str:
    """A string attribute (TVM's importer leaves them as bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)
