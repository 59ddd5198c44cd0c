"""BitCast (opset 26, tvmflow.ops.bitcast): against onnxruntime for ordinary dtypes, against
onnx's ReferenceEvaluator where onnxruntime cannot (bool, and narrow dtypes: float8, int4)."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper

from tests.onnx_ops import reference_outputs
from tvmflow.backend import TvmflowBackend

BITS = np.random.default_rng(0).integers(0, 1 << 32, (3, 5), dtype=np.uint32)


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def _check(cases: dict[str, tuple[np.ndarray, type]], use_ort: bool) -> None:
    """One model, a BitCast of each named input to its dtype; the bits must be the same."""
    feeds = {name: x for name, (x, _) in cases.items()}
    graph = helper.make_graph(
        [
            helper.make_node(
                "BitCast", [name], [f"{name}_y"], to=helper.np_dtype_to_tensor_dtype(np.dtype(to))
            )
            for name, (_, to) in cases.items()
        ],
        "bitcast",
        [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
            for name, x in feeds.items()
        ],
        [helper.make_empty_tensor_value_info(f"{name}_y") for name in cases],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26)])
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    expected = reference_outputs(model, feeds, use_ort=use_ort)
    actual = TvmflowBackend.run_model(model, feeds)
    for name, got, want in zip(cases, actual, expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        bits, ref = np.atleast_1d(got).view(np.uint8), np.atleast_1d(want).view(np.uint8)
        np.testing.assert_array_equal(bits, ref, err_msg=name)


def test_bitcast_matches_onnxruntime() -> None:
    _check(
        {
            "f32": (BITS.view(np.float32), np.int32),  # NaN payloads survive
            "i16": (BITS.view(np.int16), np.float16),
            "scalar": (np.array(-1.5, np.float64), np.uint64),
        },
        use_ort=True,
    )


def test_bitcast_of_bool_and_narrow_dtypes_matches_onnx_reference() -> None:
    _check(
        {
            "bool": (np.array([True, False]), np.uint8),
            "f8": (BITS.astype(np.uint8).view(ml_dtypes.float8_e5m2), np.int8),
            "int4": (np.arange(-8, 8).astype(ml_dtypes.int4), ml_dtypes.uint4),
            "uint4": (np.arange(16).astype(ml_dtypes.uint4), ml_dtypes.int4),
            "uint2": (np.arange(4).astype(ml_dtypes.uint2), ml_dtypes.int2),
        },
        use_ort=False,
    )
