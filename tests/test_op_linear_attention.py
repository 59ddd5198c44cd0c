"""ONNX LinearAttention (opset 27) against onnxruntime: gated-delta GQA with state, gated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def _packed(rng: np.random.Generator, b: int, t: int, heads: int, d: int) -> np.ndarray:
    x = rng.standard_normal((b, t, heads, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).reshape(b, t, heads * d)


def test_gated_delta_gqa_with_past_state() -> None:
    rng = np.random.default_rng(0)
    b, t, q_heads, kv_heads, d_k, d_v = 2, 3, 4, 2, 8, 6
    inputs: dict[str, np.ndarray | None] = {
        "query": _packed(rng, b, t, q_heads, d_k),
        "key": _packed(rng, b, t, kv_heads, d_k),
        "value": rng.standard_normal((b, t, kv_heads * d_v)).astype(np.float32),
        "past_state": rng.standard_normal((b, kv_heads, d_k, d_v)).astype(np.float32),
        "decay": -rng.uniform(0.01, 0.5, (b, t, kv_heads)).astype(np.float32),
        "beta": rng.uniform(0.1, 0.9, (b, t, kv_heads)).astype(np.float32),
    }
    model, feeds = one_node_model(
        "LinearAttention",
        inputs,
        ["output", "present_state"],
        27,
        q_num_heads=q_heads,
        kv_num_heads=kv_heads,
    )
    assert_matches(model, feeds)


def test_gated_per_key_decay_prefill_without_state() -> None:
    rng = np.random.default_rng(1)
    b, t, heads, d = 1, 4, 2, 4
    inputs: dict[str, np.ndarray | None] = {
        "query": _packed(rng, b, t, heads, d),
        "key": _packed(rng, b, t, heads, d),
        "value": rng.standard_normal((b, t, heads * d)).astype(np.float32),
        "past_state": None,
        "decay": -rng.uniform(0.01, 0.5, (b, t, heads * d)).astype(np.float32),
    }
    model, feeds = one_node_model(
        "LinearAttention",
        inputs,
        ["output", "present_state"],
        27,
        q_num_heads=heads,
        kv_num_heads=heads,
        update_rule="gated",
        scale=0.7,
    )
    assert_matches(model, feeds)


@pytest.mark.parametrize("rule", ["linear", "gated"])
def test_closed_form_with_gqa_and_past_state(rule: str) -> None:
    # T > 1 without a delta rule takes the closed form; per-head decay for "gated"
    rng = np.random.default_rng(2)
    b, t, q_heads, kv_heads, d_k, d_v = 2, 5, 4, 2, 4, 3
    inputs: dict[str, np.ndarray | None] = {
        "query": _packed(rng, b, t, q_heads, d_k),
        "key": _packed(rng, b, t, kv_heads, d_k),
        "value": rng.standard_normal((b, t, kv_heads * d_v)).astype(np.float32),
        "past_state": rng.standard_normal((b, kv_heads, d_k, d_v)).astype(np.float32),
        "decay": -rng.uniform(0.01, 0.5, (b, t, kv_heads)).astype(np.float32)
        if rule == "gated"
        else None,
    }
    model, feeds = one_node_model(
        "LinearAttention",
        inputs,
        ["output", "present_state"],
        27,
        q_num_heads=q_heads,
        kv_num_heads=kv_heads,
        update_rule=rule,
    )
    assert_matches(model, feeds)
