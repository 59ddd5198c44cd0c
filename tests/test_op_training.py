"""ai.onnx.preview.training optimizers (Adagrad, Adam, Momentum) against onnx's reference.

onnxruntime has no kernels for this domain (it fails every conformance case), so the
reference is onnx's ReferenceEvaluator; two optimized tensors per node, T > 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.onnx_ops import assert_matches

DOMAIN = "ai.onnx.preview.training"


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def _model(op: str, states: list[str], **attrs: Any) -> tuple[onnx.ModelProto, dict]:
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {"R": np.array(0.1, np.float32), "T": np.array(3, np.int64)}
    for kind in ["X", "G", *states]:
        for i, shape in enumerate([(3, 4), (5,)]):
            feeds[f"{kind}{i}"] = rng.uniform(0.1, 1.0, shape).astype(np.float32)
    outputs = [f"{kind}{i}_new" for kind in ["X", *states] for i in range(2)]
    node = helper.make_node(op, list(feeds), outputs, domain=DOMAIN, **attrs)
    graph = helper.make_graph(
        [node],
        op.lower(),
        [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in feeds.items()
        ],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True), feeds


@pytest.mark.parametrize(
    ("op", "states", "attrs"),
    [
        ("Adagrad", ["H"], {"decay_factor": 0.1, "epsilon": 1e-5, "norm_coefficient": 0.01}),
        (
            "Adam",
            ["V", "H"],
            {"alpha": 0.8, "norm_coefficient": 0.01, "norm_coefficient_post": 0.1},
        ),
        (
            "Momentum",
            ["V"],
            {"alpha": 0.9, "beta": 0.5, "mode": "nesterov", "norm_coefficient": 0.01},
        ),
    ],
    ids=["Adagrad", "Adam", "Momentum"],
)
def test_optimizer_matches_reference(op: str, states: list[str], attrs: dict) -> None:
    model, feeds = _model(op, states, **attrs)
    assert_matches(model, feeds, use_ort=False)
