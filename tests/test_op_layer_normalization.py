"""LayerNormalization with its Mean/InvStdDev outputs (TVM's converter returns placeholders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def test_layer_normalization_all_outputs_match_onnxruntime() -> None:
    rng = np.random.default_rng(0)
    inputs = {
        "X": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "scale": rng.standard_normal((3, 4)).astype(np.float32),
        "bias": rng.standard_normal((3, 4)).astype(np.float32),
    }
    model, feeds = one_node_model(
        "LayerNormalization", inputs, ["Y", "Mean", "InvStdDev"], 17, axis=1, epsilon=1e-3
    )
    assert_matches(model, feeds)
