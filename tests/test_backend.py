"""tvmflow.backend: the ONNX backend API, driven by ONNX's own backend test runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.backend.test
import pytest
from onnx import helper

import tvmflow.backend
from tvmflow.backend import TvmflowBackend, attribute_inputs


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "builds"
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(cache))
    return cache


# ONNX's runner on a handful of its node tests: plain ops, the recurrent converters, and
# attribute-like inputs fed as graph inputs (axes, shape, starts/ends, bounds).
NODE_TESTS = (
    "test_relu",
    "test_lstm_defaults",
    "test_gru_seq_length",
    "test_reduce_sum_keepdims_example",
    "test_slice_neg_steps",
    "test_reshape_reduced_dims",
    "test_clip_splitbounds",
)
_cases = onnx.backend.test.BackendTest(TvmflowBackend, __name__).test_cases  # built per access
for _cls in _cases.values():  # keep only ours, not 4000 skipped tests
    for _attr in [a for a in vars(_cls) if a.startswith("test_")]:
        if _attr.removesuffix("_cpu") not in NODE_TESTS:
            delattr(_cls, _attr)
globals().update(_cases)


def _add_model(dim: str | int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [dim, 3])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [dim, 3])
    node = helper.make_node("Add", ["x", "x"], ["y"])
    graph = helper.make_graph([node], "add", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_symbolic_dims_compile_per_shape_and_builds_are_cached(build_cache: Path) -> None:
    rep = TvmflowBackend.prepare(_add_model("n"))
    for rows in (2, 5, 2):
        x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
        (y,) = rep.run([x])
        np.testing.assert_array_equal(y, x + x)
    assert len(list(build_cache.glob("*/manifest.json"))) == 2  # the 2-row build was reused


def test_run_node_and_devices() -> None:
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    (y,) = TvmflowBackend.run_node(node, [x])
    np.testing.assert_array_equal(y, x.T)
    assert TvmflowBackend.supports_device("CPU")
    assert not TvmflowBackend.supports_device("CUDA")
    assert tvmflow.backend.supports_device("CPU")


def test_attribute_inputs_are_baked_per_value() -> None:
    """Reshape's shape fed as a graph input compiles, and a new value builds a new model."""
    data = helper.make_tensor_value_info("data", onnx.TensorProto.FLOAT, [2, 6])
    shape = helper.make_tensor_value_info("shape", onnx.TensorProto.INT64, [2])
    out = helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["a", "b"])
    node = helper.make_node("Reshape", ["data", "shape"], ["out"])
    graph = helper.make_graph([node], "reshape", [data, shape], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert attribute_inputs(model) == {"shape"}
    rep = TvmflowBackend.prepare(model)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    for target in ((3, 4), (4, 3)):
        (y,) = rep.run({"data": x, "shape": np.array(target, np.int64)})
        np.testing.assert_array_equal(y, x.reshape(target))
