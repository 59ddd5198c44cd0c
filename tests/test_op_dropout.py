"""Dropout at inference: identity plus an all-true mask (TVM's converter mis-binds the mask)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def test_dropout_with_mask_matches_onnxruntime() -> None:
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    model, feeds = one_node_model("Dropout", {"x": x}, ["y", "mask"], 13)
    assert_matches(model, feeds)
