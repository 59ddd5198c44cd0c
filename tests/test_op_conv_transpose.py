"""ConvTranspose with `output_shape`: TVM's converter ignored it (output 9x7 for a declared
10x8); tvmflow derives the pads and output_padding from it per the ONNX spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model
from tvmflow.ops.conv_transpose import pads_for_output_shape

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def test_extra_rows_at_the_end_become_output_padding() -> None:
    # onnx's own example: equivalent to output_padding [1, 1]
    attr = {"strides": [3, 2], "output_shape": [10, 8]}
    assert pads_for_output_shape([3, 3], attr, [3, 3]) == ([0, 0, 0, 0], [1, 1])


@pytest.mark.parametrize(
    ("shape", "attrs"),
    [
        ((1, 1, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
        ((1, 2, 5, 6), {"strides": [2, 2], "output_shape": [9, 11]}),
        ((1, 2, 5, 6), {"strides": [2, 2], "output_shape": [10, 12], "auto_pad": "SAME_UPPER"}),
        ((1, 2, 5, 6), {"strides": [2, 2], "output_shape": [10, 12], "auto_pad": "SAME_LOWER"}),
    ],
    ids=["larger", "smaller", "same-upper", "same-lower"],
)
def test_output_shape_matches_onnxruntime(shape: tuple[int, ...], attrs: dict) -> None:
    x = RNG.standard_normal(shape).astype(np.float32)
    w = RNG.standard_normal((shape[1], 3, 3, 3)).astype(np.float32)
    model, feeds = one_node_model("ConvTranspose", {"x": x, "w": w}, ["y"], 17, **attrs)
    assert_matches(model, feeds)
