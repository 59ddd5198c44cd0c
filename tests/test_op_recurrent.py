"""LSTM, GRU and RNN converters against onnxruntime on generated one-node models.

Each case compiles through tvmflow's backend (the normal compile path, host preset). Cases
cover every direction, `sequence_lens`, initial states, all outputs, bias, clip, non-default
activations with alpha/beta, LSTM peepholes and `input_forget`, GRU `linear_before_reset`, and
opsets 7/14/22. onnxruntime 1.32 refuses `layout=1`; those cases use onnx's reference evaluator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_ops import assert_matches, one_node_model

T, B, IN, H = 5, 3, 4, 6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
OUTPUTS = {"LSTM": ["Y", "Y_h", "Y_c"], "GRU": ["Y", "Y_h"], "RNN": ["Y", "Y_h"]}


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def recurrent_model(
    op: str,
    opset: int,
    directions: int = 1,
    bias: bool = False,
    seq_lens: bool = False,
    initial: bool = False,
    peepholes: bool = False,
    layout: int = 0,
    seed: int = 0,
    **attrs: object,
) -> tuple:
    rng = np.random.default_rng(seed)
    g = GATES[op]

    def rand(*shape: int) -> np.ndarray:
        return rng.uniform(-1, 1, shape).astype(np.float32)

    x = rand(T, B, IN) if layout == 0 else rand(B, T, IN)
    state_shape = (directions, B, H) if layout == 0 else (B, directions, H)
    inputs: dict[str, np.ndarray | None] = {
        "X": x,
        "W": rand(directions, g * H, IN),
        "R": rand(directions, g * H, H),
        "B": rand(directions, 2 * g * H) if bias else None,
        "sequence_lens": np.array([T, 2, 4][:B], np.int32) if seq_lens else None,
        "initial_h": rand(*state_shape) if initial else None,
    }
    if op == "LSTM":
        inputs["initial_c"] = rand(*state_shape) if initial else None
        inputs["P"] = rand(directions, 3 * H) if peepholes else None
    if layout:
        attrs["layout"] = layout
    return one_node_model(op, inputs, OUTPUTS[op], opset, hidden_size=H, **attrs)


CASES = [
    ("LSTM", 7, {}),
    (
        "LSTM",
        14,
        dict(
            directions=2,
            direction="bidirectional",
            bias=True,
            seq_lens=True,
            initial=True,
            peepholes=True,
        ),
    ),
    ("LSTM", 22, dict(direction="reverse", bias=True, clip=0.5, input_forget=1)),
    (
        "LSTM",
        22,
        dict(
            bias=True,
            activations=["HardSigmoid", "LeakyRelu", "ScaledTanh"],
            activation_alpha=[0.3, 0.1, 0.8],
            activation_beta=[0.4, 1.2],
        ),
    ),
    (
        "GRU",
        14,
        dict(
            directions=2,
            direction="bidirectional",
            bias=True,
            seq_lens=True,
            initial=True,
            linear_before_reset=1,
        ),
    ),
    ("GRU", 7, dict(direction="reverse", bias=True, seq_lens=True, clip=0.7)),
    (
        "GRU",
        22,
        dict(bias=True, activations=["Sigmoid", "Softsign"], initial=True),
    ),
    (
        "RNN",
        14,
        dict(
            directions=2,
            direction="bidirectional",
            bias=True,
            seq_lens=True,
            initial=True,
            activations=["Relu", "Affine"],
            activation_alpha=[0.5],
            activation_beta=[0.1],
        ),
    ),
    ("RNN", 7, dict(bias=True, activations=["Elu"], clip=0.9)),
]


@pytest.mark.parametrize(("op", "opset", "attrs"), CASES, ids=lambda v: str(v)[:12])
def test_recurrent_matches_onnxruntime(op: str, opset: int, attrs: dict) -> None:
    model, feeds = recurrent_model(op, opset, **attrs)
    assert_matches(model, feeds)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_batch_first_layout_matches_reference(op: str) -> None:
    """layout=1 (batch first, opset 14+): onnxruntime refuses it, onnx's reference does not."""
    model, feeds = recurrent_model(
        op, 14, layout=1, directions=2, direction="bidirectional", bias=True, initial=True
    )
    assert_matches(model, feeds, use_ort=False)


def test_unsupported_listing_sees_recurrent_converters(tmp_path: Path) -> None:
    """The frontend's unsupported-operator check counts tvmflow's converters as supported."""
    import onnx

    from tvmflow.frontend import load_onnx

    model, _ = recurrent_model("LSTM", 18)
    path = tmp_path / "lstm.onnx"
    onnx.save(model, path)
    assert load_onnx(path).opset == 18
