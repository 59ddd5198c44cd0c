"""ONNX Attention (opset 23) against onnxruntime: grouped KV heads, KV cache, masks, causal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model, reference_outputs
from tvmflow.backend import TvmflowBackend


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


def test_static_cache_with_nonpad_kv_seqlen_and_causal() -> None:
    # onnx's reference: onnxruntime 1.32 refuses some nonpad_kv_seqlen layouts
    rng = np.random.default_rng(2)
    inputs: dict[str, np.ndarray | None] = {
        "Q": _rand(rng, 2, 2, 3, 8),
        "K": _rand(rng, 2, 2, 7, 8),
        "V": _rand(rng, 2, 2, 7, 4),
        "attn_mask": None,
        "past_key": None,
        "past_value": None,
        "nonpad_kv_seqlen": np.array([5, 7], np.int64),
    }
    model, feeds = one_node_model("Attention", inputs, ["Y"], 24, is_causal=1)
    assert_matches(model, feeds, use_ort=False)


def test_fp16_is_computed_in_float32_and_rounded_once() -> None:
    # within half an fp16 ulp (rel 4.9e-4) of the float32 result: fp16 arithmetic is not
    rng = np.random.default_rng(3)
    inputs = {name: _rand(rng, 2, 3, n, 8) for name, n in (("Q", 4), ("K", 6), ("V", 6))}
    halves = {name: value.astype(np.float16) for name, value in inputs.items()}
    exact, _ = one_node_model(
        "Attention", {k: v.astype(np.float32) for k, v in halves.items()}, ["Y"], 23
    )
    want = reference_outputs(exact, {k: v.astype(np.float32) for k, v in halves.items()})[0]
    model, feeds = one_node_model("Attention", halves, ["Y"], 23)
    got = TvmflowBackend.run_model(model, feeds)[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=5e-4, atol=1e-4)
