"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss converters against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((3, 5, 2)).astype(np.float32)
    labels = rng.integers(0, 5, (3, 2)).astype(np.int64)
    labels[1, 0] = -1  # the ignored class
    return scores, labels, rng.uniform(0.5, 2, 5).astype(np.float32)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_with_weights_and_ignore_index(reduction: str) -> None:
    scores, labels, weight = _data()
    inputs = {"input": scores, "target": labels, "weight": weight}
    model, feeds = one_node_model(
        "NegativeLogLikelihoodLoss", inputs, ["loss"], 22, reduction=reduction, ignore_index=-1
    )
    assert_matches(model, feeds)


def test_softmax_cross_entropy_loss_outputs_log_prob() -> None:
    scores, labels, _ = _data(1)
    labels[labels < 0] = 2
    model, feeds = one_node_model(
        "SoftmaxCrossEntropyLoss", {"scores": scores, "labels": labels}, ["loss", "log_prob"], 13
    )
    assert_matches(model, feeds)
