"""Small converters (CumProd, Celu, Swish, LpNormalization, Det, opset-9 Slice) vs onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


X = np.random.default_rng(0).uniform(-2, 2, (3, 4)).astype(np.float32)
AXIS = np.array(1, np.int64)


@pytest.mark.parametrize(
    ("op", "inputs", "opset", "attrs"),
    [
        ("CumProd", {"x": X, "axis": AXIS}, 26, {"exclusive": 1, "reverse": 1}),
        ("Celu", {"x": X}, 12, {"alpha": 0.7}),
        ("Swish", {"x": X}, 24, {"alpha": 1.5}),
        ("LpNormalization", {"x": X}, 22, {"axis": 0, "p": 1}),
    ],
    ids=["CumProd", "Celu", "Swish", "LpNormalization"],
)
def test_small_op_matches_onnxruntime(op: str, inputs: dict, opset: int, attrs: dict) -> None:
    model, feeds = one_node_model(op, inputs, ["y"], opset, **attrs)
    assert_matches(model, feeds)


def test_det_with_pivoting_and_a_singular_matrix() -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 5)).astype(np.float32)
    x[0, 0, 0, 0] = 0.0  # the first pivot must come from another row
    x[1, 2, 4] = x[1, 2, 1] * 2  # singular: determinant 0, not NaN
    model, feeds = one_node_model("Det", {"x": x}, ["y"], 22)
    assert_matches(model, feeds, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "attrs",
    [
        {"starts": [0], "ends": [2], "axes": [0]},  # AECMOS's initial-state slices
        {"starts": [-2, 1], "ends": [2**63 - 1, -1]},  # negative starts, "to the end"
    ],
)
def test_attribute_slice_of_opset_9_matches_onnxruntime(attrs: dict) -> None:
    """Slice before opset 10 takes starts / ends / axes as attributes (TVM has only the
    input form)."""
    model, feeds = one_node_model("Slice", {"x": X}, ["y"], 9, **attrs)
    assert_matches(model, feeds)
