"""Accuracy against onnxruntime: the reference every artifact is checked against."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.manifest import OutputAccuracy


@dataclass(frozen=True)
class Tolerance:
    """Pass when max |actual - expected| <= atol + rtol * max |expected| for every output.

    Scaling by the output's magnitude (not per element) keeps near-zero elements, whose
    relative error is meaningless after reordered fp32 sums, from failing a correct build.
    """

    atol: float = 1e-4
    rtol: float = 1e-3

    def __post_init__(self) -> None:
        for name, value in (("atol", self.atol), ("rtol", self.rtol)):
            if not (math.isfinite(value) and value >= 0):
                raise TvmflowError(
                    f"--{name} {value} is not a tolerance: give a finite number >= 0 "
                    f"(default {getattr(Tolerance, name)})"
                )

    def passes(self, acc: OutputAccuracy, scale: float) -> bool:
        return (
            bool(np.isfinite(acc.max_abs_err)) and acc.max_abs_err <= self.atol + self.rtol * scale
        )


# fp16 rounds every activation to 11 significant bits: errors of 1e-3 relative are expected.
FP16_TOLERANCE = Tolerance(atol=1e-2, rtol=1e-2)
# bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3 per operand); summed over a
# network's layers, errors of 1e-2 of an output's magnitude are expected.
BF16_TOLERANCE = Tolerance(atol=2e-2, rtol=3e-2)
LOW_PRECISION_TOLERANCE = {"fp16": FP16_TOLERANCE, "bf16": BF16_TOLERANCE}


def tolerance_for(precision: str, requested: Tolerance) -> Tolerance:
    """The tolerance an artifact of this precision is held to: fp16 / bf16 never tighter
    than FP16_TOLERANCE / BF16_TOLERANCE."""
    floor = LOW_PRECISION_TOLERANCE.get(precision)
    if floor is None:
        return requested
    return Tolerance(max(requested.atol, floor.atol), max(requested.rtol, floor.rtol))


def onnxruntime_outputs(
    model: Path, feeds: Mapping[str, np.ndarray], threads: int | None = None
) -> dict[str, np.ndarray]:
    """The accuracy reference: the original ONNX file on onnxruntime's CPU provider, its
    ops as written (`onnxruntime_session(as_written=True)`)."""
    from tvmflow.engines import onnxruntime_session

    for name, array in feeds.items():
        if np.asarray(array).dtype.kind == "V":  # ml_dtypes: bfloat16, float8, int4, ...
            raise TvmflowError(
                f"onnxruntime's Python API cannot take input {name!r} of "
                f"{np.asarray(array).dtype}, so there is no reference to check against; "
                "compile with --no-verify (verify=False)"
            )
    session = onnxruntime_session(model, threads or 0, as_written=True)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def compare(
    actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
) -> tuple[OutputAccuracy, ...]:
    """Max abs error, max error relative to the output's magnitude, cosine similarity."""
    results = []
    for name, ref in expected.items():
        got = np.asarray(actual[name])
        ref = np.asarray(ref)
        if got.shape != ref.shape:
            raise ValueError(f"output {name!r}: shape {got.shape} != onnxruntime's {ref.shape}")
        a = got.astype(np.float64).ravel()
        b = ref.astype(np.float64).ravel()
        diff = np.abs(a - b)
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(b).max()) if b.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        norm = float(np.linalg.norm(a) * np.linalg.norm(b))
        cosine = float(a @ b / norm) if norm > 0 else float(np.array_equal(a, b))
        results.append(OutputAccuracy(name, max_abs, max_rel, cosine))
    return tuple(results)


def output_scales(expected: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {
        k: float(np.abs(np.asarray(v, np.float64)).max(initial=0.0)) for k, v in expected.items()
    }
