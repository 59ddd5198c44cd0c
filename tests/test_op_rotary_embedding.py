"""ONNX RotaryEmbedding (opset 23) against onnxruntime: both layouts, partial, interleaved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def test_3d_partial_interleaved_with_position_ids() -> None:
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray | None] = {
        "X": rng.standard_normal((2, 3, 4 * 8)).astype(np.float32),
        "cos_cache": rng.standard_normal((10, 3)).astype(np.float32),
        "sin_cache": rng.standard_normal((10, 3)).astype(np.float32),
        "position_ids": rng.integers(0, 10, (2, 3)).astype(np.int64),
    }
    model, feeds = one_node_model(
        "RotaryEmbedding", inputs, ["Y"], 23, num_heads=4, rotary_embedding_dim=6, interleaved=1
    )
    assert_matches(model, feeds)


def test_4d_halves_with_per_token_caches() -> None:
    rng = np.random.default_rng(1)
    inputs = {
        "X": rng.standard_normal((2, 3, 5, 8)).astype(np.float32),
        "cos_cache": rng.standard_normal((2, 5, 4)).astype(np.float32),
        "sin_cache": rng.standard_normal((2, 5, 4)).astype(np.float32),
    }
    model, feeds = one_node_model("RotaryEmbedding", inputs, ["Y"], 23)
    assert_matches(model, feeds)
