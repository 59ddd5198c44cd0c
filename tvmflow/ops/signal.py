"""ONNX signal ops (opset 17+): DFT, STFT, Hann/Hamming/Blackman windows, MelWeightMatrix.

The transforms are matmuls with constant DFT matrices built in numpy at import (lengths,
axes and frame steps are static), so they compile and tune like any dense layer and serve
audio front ends whose frame sizes are small. Windows and mel matrices depend on constant
inputs only and become constants. Formulas follow onnx's reference implementation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter
from tvmflow.ops.common import constant, optional, required, shape

Expr = Any


def _out_dtype(attr: dict[str, Any]) -> str:
    return str(onnx.helper.tensor_dtype_to_np_dtype(int(attr.get("output_datatype", 1))))


def dft(bb: Any, x: Expr, axis: int, length: int | None, inverse: bool, onesided: bool) -> Expr:
    """DFT of `x` ([..., n, ..., 1 or 2]: real or complex) along `axis`, as matmuls."""
    op = relax.op
    dims = shape(x)
    rank, parts = len(dims), dims[-1]
    axis %= rank
    n_in = dims[axis]
    irfft = inverse and onesided
    n = length or (2 * (n_in - 1) if irfft else n_in)
    dtype = str(x.ty.dtype)
    acc = "float32" if dtype == "float16" else dtype
    perm = [i for i in range(rank - 1) if i != axis] + [axis]
    rows = min(n_in, n // 2 + 1 if irfft else n)

    def component(index: int) -> Expr:
        part = op.squeeze(op.strided_slice(x, [rank - 1], [index], [index + 1]), [rank - 1])
        part = op.permute_dims(part, perm) if perm != list(range(rank - 1)) else part
        part = op.strided_slice(part, [rank - 2], [0], [rows]) if rows < n_in else part
        return bb.emit(op.astype(part, acc)) if acc != dtype else bb.emit(part)

    real = component(0)
    imag = component(1) if parts == 2 else None
    j = np.arange(rows)[:, None]
    if irfft:  # real output of a Hermitian spectrum given by its first n // 2 + 1 bins
        t = np.arange(n)[None, :]
        weight = np.where((j == 0) | (2 * j == n), 1.0, 2.0) / n
        cos_m = weight * np.cos(2 * np.pi * j * t / n)
        sin_m = -weight * np.sin(2 * np.pi * j * t / n)
        y = op.matmul(real, relax.const(cos_m.astype(acc)))
        if imag is not None:
            y = op.add(y, op.matmul(imag, relax.const(sin_m.astype(acc))))
        out = bb.emit(op.expand_dims(y, rank - 1))
    else:
        k = np.arange(n // 2 + 1 if onesided else n)[None, :]
        sign, scale = (1.0, 1.0 / n) if inverse else (-1.0, 1.0)
        cos_c = relax.const((scale * np.cos(2 * np.pi * j * k / n)).astype(acc))
        sin_c = relax.const((sign * scale * np.sin(2 * np.pi * j * k / n)).astype(acc))
        y_real, y_imag = op.matmul(real, cos_c), op.matmul(real, sin_c)
        if imag is not None:  # (a + ib)(c + is) = ac - bs + i(as + bc)
            y_real = op.subtract(y_real, op.matmul(imag, sin_c))
            y_imag = op.add(y_imag, op.matmul(imag, cos_c))
        out = bb.emit(op.stack([bb.emit(y_real), bb.emit(y_imag)], axis=rank - 1))
    if perm != list(range(rank - 1)):
        out = bb.emit(op.permute_dims(out, [*np.argsort(perm).tolist(), rank - 1]))
    return op.astype(out, dtype) if acc != dtype else out


class DFT(OnnxOpConverter):
    @classmethod
    def _impl_v17(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        return cls._run(bb, inputs, attr, params, int(attr.get("axis", 1)))

    @classmethod
    def _impl_v20(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        axis = constant(optional(inputs, 2), params, "DFT axis")
        return cls._run(bb, inputs, attr, params, -2 if axis is None else int(axis))

    @classmethod
    def _run(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any, axis: int) -> Expr:
        length = constant(optional(inputs, 1), params, "DFT dft_length")
        return dft(
            bb,
            inputs[0],
            axis,
            None if length is None else int(length),
            bool(attr.get("inverse", 0)),
            bool(attr.get("onesided", 0)),
        )


class STFT(OnnxOpConverter):
    """Frames of a [batch, length, 1 or 2] signal, windowed, then a DFT of frame length."""

    @classmethod
    def _impl_v17(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        signal, window = inputs[0], optional(inputs, 2)
        step = int(required(inputs[1], params, "STFT frame_step"))
        given = constant(optional(inputs, 3), params, "STFT frame_length")
        length = shape(signal)[1]
        if given is not None:
            frame = int(given)
        else:
            frame = shape(window)[0] if window is not None else length
        frames = 1 + (length - frame) // step
        index = np.arange(frames)[:, None] * step + np.arange(frame)[None, :]
        x = bb.emit(op.take(signal, relax.const(index.astype("int64")), axis=1))
        if window is not None:  # [batch, frames, frame, parts] * [frame, 1]
            x = bb.emit(op.multiply(x, op.reshape(window, [frame, 1])))
        return dft(bb, x, 2, frame, inverse=False, onesided=bool(attr.get("onesided", 1)))


def _window_converter(name: str, formula: Any) -> type:
    """A converter class for a window of constant size: `formula(n, N)` with N = size or size-1."""

    def impl(cls: type, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        size = int(required(inputs[0], params, f"{name} size"))
        periodic = int(attr.get("periodic", 1))
        n = np.arange(size, dtype=np.float64)
        window = formula(n, size if periodic else size - 1)
        return relax.const(window.astype(_out_dtype(attr)))

    return type(name, (OnnxOpConverter,), {"_impl_v17": classmethod(impl)})


HannWindow = _window_converter("HannWindow", lambda n, m: np.sin(n * np.pi / m) ** 2)
HammingWindow = _window_converter(
    "HammingWindow", lambda n, m: 25 / 46 - (21 / 46) * np.cos(2 * np.pi * n / m)
)
BlackmanWindow = _window_converter(
    "BlackmanWindow",
    lambda n, m: 0.42 - 0.5 * np.cos(2 * np.pi * n / m) + 0.08 * np.cos(4 * np.pi * n / m),
)


class MelWeightMatrix(OnnxOpConverter):
    """Triangular mel filters [dft_length // 2 + 1, num_mel_bins], as onnx's reference."""

    @classmethod
    def _impl_v17(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        names = ("num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge")
        values = [
            required(e, params, f"MelWeightMatrix {w}") for e, w in zip(inputs, names, strict=True)
        ]
        bins, length, rate = (int(v) for v in values[:3])
        low, high = (float(v) for v in values[3:])
        return relax.const(mel_weights(bins, length, rate, low, high).astype(_out_dtype(attr)))


def mel_weights(bins: int, length: int, rate: int, low: float, high: float) -> np.ndarray:
    def to_mel(hz: float) -> float:
        return float(2595 * np.log1p(hz / 700) / np.log(10))

    step = (to_mel(high) - to_mel(low)) / (bins + 2)
    mel = np.arange(bins + 2) * step + to_mel(low)
    edges = ((length + 1) * (700 * np.expm1(mel / 2595 * np.log(10)))) // rate
    edges = edges.astype(int)
    out = np.zeros((length // 2 + 1, bins))
    for i in range(bins):
        left, center, right = edges[i], edges[i + 1], edges[i + 2]
        if center == left:
            out[center, i] = 1
        else:
            out[left : center + 1, i] = (np.arange(left, center + 1) - left) / (center - left)
        if right > center:
            out[center:right, i] = (right - np.arange(center, right)) / (right - center)
    return out


CONVERTERS = (
    Converter("DFT", DFT, since=17),
    Converter("STFT", STFT, since=17),
    Converter("HannWindow", HannWindow, since=17),
    Converter("HammingWindow", HammingWindow, since=17),
    Converter("BlackmanWindow", BlackmanWindow, since=17),
    Converter("MelWeightMatrix", MelWeightMatrix, since=17),
)
