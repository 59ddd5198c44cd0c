"""ONNX signal ops (DFT, STFT, windows, MelWeightMatrix) against a reference.

DFT and STFT are checked against onnx's ReferenceEvaluator (float64 FFTs): onnxruntime's
results differ from onnx's own by float32 round-off near zero, which fails its conformance
cases; the windows and the mel matrix against onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, constant_input_model, one_node_model


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


RNG = np.random.default_rng(0)
COMPLEX = RNG.standard_normal((2, 6, 3, 2)).astype(np.float32)
REAL = RNG.standard_normal((2, 3, 8, 1)).astype(np.float32)


@pytest.mark.parametrize(
    ("x", "length", "axis", "attrs"),
    [
        (COMPLEX, 8, 1, {}),  # zero-padded complex DFT along a middle axis
        (REAL, 6, -2, {"onesided": 1}),  # truncated rfft
        (COMPLEX[..., :4, :, :], 6, 1, {"inverse": 1, "onesided": 1}),  # irfft
        (COMPLEX, None, 2, {"inverse": 1}),
    ],
    ids=["padded", "rfft", "irfft", "inverse"],
)
def test_dft_matches_reference(x: np.ndarray, length: int | None, axis: int, attrs: dict) -> None:
    inputs: dict[str, np.ndarray | None] = {
        "x": x,
        "dft_length": None if length is None else np.array(length, np.int64),
        "axis": np.array(axis, np.int64),
    }
    model, feeds = one_node_model("DFT", inputs, ["y"], 20, **attrs)
    assert_matches(model, feeds, use_ort=False, atol=1e-4)


def test_stft_with_window_matches_reference() -> None:
    inputs = {
        "signal": RNG.standard_normal((2, 40, 1)).astype(np.float32),
        "window": np.hanning(10).astype(np.float32),
    }
    constants = {"frame_step": np.array(6, np.int64), "frame_length": np.array(10, np.int64)}
    order = ["signal", "frame_step", "window", "frame_length"]
    model = constant_input_model("STFT", inputs, constants, order, onesided=1)
    assert_matches(model, inputs, use_ort=False, atol=1e-4)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_window_matches_onnxruntime(op: str, periodic: int) -> None:
    model = constant_input_model(
        op, {}, {"size": np.array(12, np.int64)}, ["size"], periodic=periodic
    )
    assert_matches(model, {}, atol=1e-6)


def test_mel_weight_matrix_matches_onnxruntime() -> None:
    values = {"num_mel_bins": 8, "dft_length": 64, "sample_rate": 16000}
    constants = {k: np.array(v, np.int64) for k, v in values.items()}
    constants |= {
        "lower_edge_hertz": np.array(20.0, np.float32),
        "upper_edge_hertz": np.array(7600.0, np.float32),
    }
    model = constant_input_model("MelWeightMatrix", {}, constants, list(constants))
    assert_matches(model, {})
