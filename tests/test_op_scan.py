"""ONNX Scan (opsets 8 and 9+), unrolled, against onnxruntime: state, directions, axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.onnx_ops import assert_matches


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def _body() -> onnx.GraphProto:
    """sum' = sum + x * w (w from the outer graph); out = tanh(sum')."""
    f = TensorProto.FLOAT
    return helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["sum", "xw"], ["sum_out"]),
            helper.make_node("Tanh", ["sum_out"], ["out"]),
        ],
        "body",
        [helper.make_tensor_value_info("sum", f, [3]), helper.make_tensor_value_info("x", f, [3])],
        [
            helper.make_tensor_value_info("sum_out", f, [3]),
            helper.make_tensor_value_info("out", f, [3]),
        ],
    )


def test_scan_with_axes_and_directions() -> None:
    f = TensorProto.FLOAT
    scan = helper.make_node(
        "Scan",
        ["init", "xs"],
        ["final", "ys"],
        body=_body(),
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_input_directions=[1],
        scan_output_axes=[1],
        scan_output_directions=[1],
    )
    weight = helper.make_tensor("w", f, [3], [0.5, -1.0, 2.0])
    graph = helper.make_graph(
        [scan],
        "scan",
        [
            helper.make_tensor_value_info("init", f, [3]),
            helper.make_tensor_value_info("xs", f, [3, 5]),
        ],
        [
            helper.make_tensor_value_info("final", f, [3]),
            helper.make_tensor_value_info("ys", f, [3, 5]),
        ],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    onnx.checker.check_model(model)
    rng = np.random.default_rng(0)
    feeds = {
        "init": rng.standard_normal(3).astype(np.float32),
        "xs": rng.standard_normal((3, 5)).astype(np.float32),
    }
    assert_matches(model, feeds)


def test_scan8_batched() -> None:
    f = TensorProto.FLOAT
    body = _body()
    body.initializer.append(helper.make_tensor("w", f, [3], [0.5, -1.0, 2.0]))
    scan = helper.make_node(
        "Scan", ["", "init", "xs"], ["final", "ys"], body=body, num_scan_inputs=1, directions=[1]
    )
    graph = helper.make_graph(
        [scan],
        "scan8",
        [
            helper.make_tensor_value_info("init", f, [2, 3]),
            helper.make_tensor_value_info("xs", f, [2, 4, 3]),
        ],
        [
            helper.make_tensor_value_info("final", f, [2, 3]),
            helper.make_tensor_value_info("ys", f, [2, 4, 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 4
    rng = np.random.default_rng(1)
    feeds = {
        "init": rng.standard_normal((2, 3)).astype(np.float32),
        "xs": rng.standard_normal((2, 4, 3)).astype(np.float32),
    }
    assert_matches(model, feeds)
