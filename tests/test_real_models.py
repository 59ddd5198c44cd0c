"""Real pretrained models shipped inside packages on the index, compiled and matched to ORT."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import tvmflow
from tests.conftest import REAL_MODELS, real_model
from tvmflow.accuracy import Tolerance, compare, onnxruntime_outputs
from tvmflow.compile import compile_model
from tvmflow.frontend import load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.targets import resolve_preset


@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_real_model_compiles_and_matches_onnxruntime(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Verified at compile time, matches again on other inputs, and no tvmflow schedule
    rule had to be replaced by the compile-time kernel check (PP-OCRv6 det's pad epilogue
    was one)."""
    path = real_model(name)
    imported = load_onnx(path, REAL_MODELS[name])
    with caplog.at_level(logging.WARNING, logger="tvmflow.kernel_check"):
        artifact = compile_model(imported, resolve_preset("x86"), tmp_path / "art")
    assert [r.getMessage() for r in caplog.records if r.name == "tvmflow.kernel_check"] == []
    assert artifact.manifest.accuracy is not None  # compile verified it (seed 0)
    model = tvmflow.load(artifact.directory)
    feeds = random_inputs(model.inputs, seed=7)
    expected = onnxruntime_outputs(path, feeds)
    for acc in compare(model.run(feeds), expected):
        scale = float(np.abs(expected[acc.name]).max())
        assert Tolerance().passes(acc, scale), acc
        assert acc.cosine > 0.9999


def test_minilm_int64_inputs_are_kept() -> None:
    imported = load_onnx(real_model("minilm-int8.onnx"), REAL_MODELS["minilm-int8.onnx"])
    assert {s.dtype for s in imported.inputs} == {"int64"}
    assert [s.name for s in imported.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
