"""ONNX CausalConvWithState (opset 27) against onnxruntime: carried state, bias, SiLU, fp16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def test_decode_with_past_state_bias_and_silu() -> None:
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray | None] = {
        "input": rng.standard_normal((2, 6, 5)).astype(np.float32),
        "weight": rng.standard_normal((6, 1, 4)).astype(np.float32),
        "bias": rng.standard_normal(6).astype(np.float32),
        "past_state": rng.standard_normal((2, 6, 3)).astype(np.float32),
    }
    outputs = ["output", "present_state"]
    model, feeds = one_node_model("CausalConvWithState", inputs, outputs, 27, activation="silu")
    assert_matches(model, feeds)


def test_prefill_fp16_with_bias_without_state() -> None:
    rng = np.random.default_rng(1)
    inputs: dict[str, np.ndarray | None] = {
        "input": rng.standard_normal((1, 8, 7)).astype(np.float16),
        "weight": rng.standard_normal((8, 1, 3)).astype(np.float16),
        "bias": rng.standard_normal(8).astype(np.float16),
    }
    outputs = ["output", "present_state"]
    model, feeds = one_node_model("CausalConvWithState", inputs, outputs, 27, activation="swish")
    assert_matches(model, feeds, rtol=1e-3, atol=1e-3)
