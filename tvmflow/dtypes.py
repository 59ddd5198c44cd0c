"""Narrow dtypes (float8, float4, int4, int2): how compiled code and its edges hold them.

TVM 0.27 cannot hold sub-byte buffers (`dtype.bits % 8 == 0`) and its LLVM casts of float8
are wrong, so a compiled model never sees these dtypes: each lives in an 8-bit *storage*
dtype, float formats as their bit pattern (uint8), integer formats as their value (int8 or
uint8). Conversions between storage and real dtypes are tvmflow's own converters
(`tvmflow.ops.cast`, `tvmflow.ops.quantize_linear`). Callers still pass and get the real
dtypes (ml_dtypes arrays, as onnx uses): the runtime converts at the edges with
`to_storage` / `from_storage`. numpy and ml_dtypes only: the runtime imports this module.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

# real dtype name (numpy/ml_dtypes, as onnx names them) -> storage dtype name
FLOAT_STORAGE = {
    "float8_e4m3fn": "uint8",
    "float8_e4m3fnuz": "uint8",
    "float8_e5m2": "uint8",
    "float8_e5m2fnuz": "uint8",
    "float4_e2m1fn": "uint8",
    "float8_e8m0fnu": "uint8",
}
INT_STORAGE = {"int4": "int8", "uint4": "uint8", "int2": "int8", "uint2": "uint8"}
STORAGE = {**FLOAT_STORAGE, **INT_STORAGE}


def is_narrow(dtype: str) -> bool:
    """Whether compiled code holds `dtype` in a storage dtype instead."""
    return dtype in STORAGE


def storage_dtype(dtype: str) -> str:
    """The dtype compiled code uses for `dtype` (itself for ordinary dtypes)."""
    return STORAGE.get(dtype, dtype)


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype of a dtype name, narrow ones included (ml_dtypes)."""
    return np.dtype(getattr(ml_dtypes, dtype)) if is_narrow(dtype) else np.dtype(dtype)


def to_storage(array: np.ndarray) -> np.ndarray:
    """A real-dtype array as compiled code holds it (ordinary arrays are returned as they are)."""
    name = array.dtype.name
    if name in FLOAT_STORAGE:
        return array.view(np.uint8)
    if name in INT_STORAGE:
        return array.astype(INT_STORAGE[name])
    return array


def from_storage(array: np.ndarray, dtype: str) -> np.ndarray:
    """A storage array as the real dtype `dtype` (ordinary dtypes are returned as they are)."""
    if dtype in FLOAT_STORAGE:
        bits = array.astype(np.uint8, copy=False)
        if dtype == "float4_e2m1fn":
            bits = bits & np.uint8(0x0F)
        return bits.view(numpy_dtype(dtype))
    if dtype in INT_STORAGE:
        return array.astype(numpy_dtype(dtype))
    return array
