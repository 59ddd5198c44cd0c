"""ONNX Loop with a constant trip count, unrolled, against onnxruntime; data-dependent M refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvmflow
from tests.onnx_ops import assert_matches
from tvmflow.errors import TvmflowError


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def _body(stop_above: float | None) -> onnx.GraphProto:
    """y' = y * 0.9 + table[i]; scan out y'; continue while sum(y') < stop_above (if given)."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Unsqueeze", ["i", "zero"], ["at"]),
        helper.make_node("Add", ["at", "one"], ["to"]),
        helper.make_node("Slice", ["table", "at", "to"], ["row"]),
        helper.make_node("Mul", ["y", "decay"], ["scaled"]),
        helper.make_node("Add", ["scaled", "row"], ["y_out"]),
        helper.make_node("Identity", ["y_out"], ["scan"]),
    ]
    if stop_above is None:
        nodes.append(helper.make_node("Identity", ["cond"], ["cond_out"]))
    else:
        nodes += [
            helper.make_node("ReduceSum", ["y_out"], ["total"], keepdims=0),
            helper.make_node("Less", ["total", "limit"], ["cond_out"]),
        ]
    consts: dict[str, np.ndarray] = {
        "zero": np.array([0], np.int64),
        "one": np.array([1], np.int64),
        "decay": np.array(0.9, np.float32),
        "limit": np.array(stop_above or 0.0, np.float32),
        "table": np.arange(18, dtype=np.float32).reshape(6, 3) / 10,
    }
    outputs = [
        helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("y_out", f, [1, 3]),
    ]
    if stop_above is None:
        outputs.append(helper.make_tensor_value_info("scan", f, [1, 3]))
    return helper.make_graph(
        nodes,
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y", f, [1, 3]),
        ],
        outputs,
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )


def _model(stop_above: float | None, trips_from_data: bool = False) -> onnx.ModelProto:
    f = TensorProto.FLOAT
    outputs = ["y_final"] + ([] if stop_above is not None else ["ys"])
    loop = helper.make_node("Loop", ["M", "cond", "y0"], outputs, body=_body(stop_above))
    inputs = [helper.make_tensor_value_info("y0", f, [1, 3])]
    inits = [numpy_helper.from_array(np.array(True), "cond")]
    nodes = [loop]
    if trips_from_data:  # M = int(sum(y0)): known only at run time
        nodes[:0] = [
            helper.make_node("ReduceSum", ["y0"], ["total"], keepdims=0),
            helper.make_node("Cast", ["total"], ["M"], to=TensorProto.INT64),
        ]
    else:
        inits.append(numpy_helper.from_array(np.array(5, np.int64), "M"))
    shapes = {"y_final": [1, 3], "ys": [5, 1, 3]}
    infos = [helper.make_tensor_value_info(o, f, shapes[o]) for o in outputs]
    graph = helper.make_graph(nodes, "loop", inputs, infos, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


Y0 = np.array([[1.0, -2.0, 0.5]], np.float32)


def test_constant_trip_count_with_scan_output() -> None:
    assert_matches(_model(None), {"y0": Y0})


def test_data_dependent_exit_keeps_the_last_values() -> None:
    assert_matches(_model(stop_above=3.0), {"y0": Y0})  # stops after 3 of 5 iterations


def test_data_dependent_trip_count_is_refused(tmp_path: Path) -> None:
    """Through compile, where y0 is a run-time input (the backend bakes small inputs that a
    trip count is computed from, so there the count is a constant)."""
    path = tmp_path / "loop.onnx"
    onnx.save(_model(None, trips_from_data=True), path)
    with pytest.raises(TvmflowError, match="unsupported operators: Loop with a data-dependent"):
        tvmflow.compile(path, "x86", output=tmp_path / "art", input_shapes={"y0": [1, 3]})


def test_if_on_the_iteration_number_takes_its_branch() -> None:
    """y' = y + y0 (an outer run-time value) on the first iteration, y + 1 on the others: the
    body cannot stand alone for onnxslim, so the If is taken by the converter itself."""
    f = TensorProto.FLOAT

    def branch(name: str, op: str, const: float) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node(op, ["y", f"{name}_c"], [f"{name}_out"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", f, [1, 3])],
            [numpy_helper.from_array(np.array(const, np.float32), f"{name}_c")],
        )

    body = helper.make_graph(
        [
            helper.make_node("Equal", ["i", "first"], ["is_first"]),
            helper.make_node(
                "If",
                ["is_first"],
                ["y_out"],
                then_branch=helper.make_graph(
                    [helper.make_node("Add", ["y", "y0"], ["first_out"])],
                    "first",
                    [],
                    [helper.make_tensor_value_info("first_out", f, [1, 3])],
                ),
                else_branch=branch("step", "Add", 1.0),
            ),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y", f, [1, 3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y_out", f, [1, 3]),
        ],
        [numpy_helper.from_array(np.array(0, np.int64), "first")],
    )
    loop = helper.make_node("Loop", ["M", "", "y0"], ["y_final"], body=body)
    graph = helper.make_graph(
        [loop],
        "loop_if",
        [helper.make_tensor_value_info("y0", f, [1, 3])],
        [helper.make_tensor_value_info("y_final", f, [1, 3])],
        [numpy_helper.from_array(np.array(4, np.int64), "M")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    assert_matches(model, {"y0": Y0})
