"""CenterCropPad, ReverseSequence, TensorScatter and Col2Im against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, constant_input_model, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


RNG = np.random.default_rng(0)


def test_center_crop_pad_crops_one_axis_and_pads_another() -> None:
    inputs = {"x": RNG.standard_normal((2, 9, 4, 3)).astype(np.float32)}
    constants = {"shape": np.array([6, 7], np.int64)}
    model = constant_input_model(
        "CenterCropPad", inputs, constants, ["x", "shape"], 18, axes=[-3, 2]
    )
    assert_matches(model, inputs)


@pytest.mark.parametrize(("batch_axis", "time_axis"), [(0, 1), (1, 0)])
def test_reverse_sequence(batch_axis: int, time_axis: int) -> None:
    inputs: dict[str, np.ndarray | None] = {
        "x": RNG.standard_normal((5, 5, 3)).astype(np.float32),
        "sequence_lens": np.array([1, 5, 3, 0, 2], np.int64),
    }
    attrs = {"batch_axis": batch_axis, "time_axis": time_axis}
    model, feeds = one_node_model("ReverseSequence", inputs, ["y"], 10, **attrs)
    assert_matches(model, feeds)


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode: str) -> None:
    inputs: dict[str, np.ndarray | None] = {
        "past_cache": RNG.standard_normal((3, 2, 6, 4)).astype(np.float32),
        "update": RNG.standard_normal((3, 2, 2, 4)).astype(np.float32),
        "write_indices": np.array([0, 3, 4 if mode == "linear" else 5], np.int64),
    }
    model, feeds = one_node_model("TensorScatter", inputs, ["present_cache"], 24, mode=mode)
    assert_matches(model, feeds)


def test_col2im_with_strides_pads_and_dilations() -> None:
    # image 7x6, block 2x3, strides (2, 1), dilations (1, 2), pads (1, 0, 0, 1): 4 x 3 blocks
    inputs = {"input": RNG.standard_normal((2, 3 * 6, 4 * 3)).astype(np.float32)}
    constants = {
        "image_shape": np.array([7, 6], np.int64),
        "block_shape": np.array([2, 3], np.int64),
    }
    model = constant_input_model(
        "Col2Im",
        inputs,
        constants,
        ["input", "image_shape", "block_shape"],
        18,
        strides=[2, 1],
        dilations=[1, 2],
        pads=[1, 0, 0, 1],
    )
    assert_matches(model, inputs)
