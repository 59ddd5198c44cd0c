"""ONNX TfIdfVectorizer (opset 9) against onnxruntime: uni- and bigrams with skips, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
def test_tfidf_vectorizer(mode: str) -> None:
    rng = np.random.default_rng(0)
    inputs: dict[str, np.ndarray | None] = {"X": rng.integers(2, 9, (3, 10)).astype(np.int64)}
    model, feeds = one_node_model(
        "TfIdfVectorizer",
        inputs,
        ["Y"],
        9,
        mode=mode,
        min_gram_length=1,
        max_gram_length=3,
        max_skip_count=2,
        ngram_counts=[0, 3, 9],
        ngram_indexes=[6, 0, 1, 2, 3, 4, 5, 7, 8],  # 3 unigrams, 3 bigrams, 3 trigrams
        pool_int64s=[2, 5, 7, 3, 4, 5, 6, 7, 8, 2, 3, 4, 5, 5, 5, 6, 7, 8],
        weights=[0.5, 1.0, 1.5, 2.0, 0.25, 3.0, 0.1, 0.2, 0.3],
    )
    assert_matches(model, feeds)
