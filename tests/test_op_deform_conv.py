"""ONNX DeformConv (opset 19) against onnxruntime: groups, offset groups, mask, bias, strides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def test_deform_conv_grouped_with_mask_and_bias() -> None:
    rng = np.random.default_rng(0)
    # 7x6 input, 3x2 kernel, strides 2x1, pads 1, dilations 1x2: 4 x 6 outputs
    inputs: dict[str, np.ndarray | None] = {
        "X": rng.standard_normal((2, 4, 7, 6)).astype(np.float32),
        "W": rng.standard_normal((6, 2, 3, 2)).astype(np.float32),
        "offset": (2 * rng.standard_normal((2, 2 * 6 * 2, 4, 6))).astype(np.float32),
        "B": rng.standard_normal(6).astype(np.float32),
        "mask": rng.uniform(0, 1, (2, 2 * 6, 4, 6)).astype(np.float32),
    }
    model, feeds = one_node_model(
        "DeformConv",
        inputs,
        ["Y"],
        22,
        group=2,
        offset_group=2,
        strides=[2, 1],
        pads=[1, 1, 1, 1],
        dilations=[1, 2],
    )
    assert_matches(model, feeds)
