"""ONNX Attention (opset 23) against onnxruntime: grouped KV heads, KV cache, masks, causal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def test_gqa_with_cache_causal_and_bool_mask() -> None:
    rng = np.random.default_rng(0)
    inputs = {
        "Q": _rand(rng, 2, 4, 3, 8),
        "K": _rand(rng, 2, 2, 3, 8),
        "V": _rand(rng, 2, 2, 3, 8),
        "attn_mask": rng.integers(0, 2, (3, 5)).astype(bool) | np.eye(3, 5, dtype=bool),
        "past_key": _rand(rng, 2, 2, 2, 8),
        "past_value": _rand(rng, 2, 2, 2, 8),
    }
    outputs = ["Y", "present_key", "present_value"]
    model, feeds = one_node_model("Attention", inputs, outputs, 23, is_causal=1)
    assert_matches(model, feeds)


def test_3d_inputs_with_scale_and_softcap() -> None:
    rng = np.random.default_rng(1)
    inputs = {"Q": _rand(rng, 2, 3, 16), "K": _rand(rng, 2, 5, 8), "V": _rand(rng, 2, 5, 8)}
    model, feeds = one_node_model(
        "Attention", inputs, ["Y"], 23, q_num_heads=4, kv_num_heads=2, scale=0.3, softcap=2.0
    )
    assert_matches(model, feeds)
