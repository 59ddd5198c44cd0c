"""Helpers for converter tests: one-node ONNX models, run by tvmflow and by a reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tvmflow.accuracy import unsigned_integer_weights
from tvmflow.backend import TvmflowBackend


def one_node_model(
    op: str,
    inputs: Mapping[str, np.ndarray | None],
    outputs: Sequence[str],
    opset: int,
    **attrs: Any,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A model of one `op` node; inputs given as None are left out (empty name)."""
    names = [name if value is not None else "" for name, value in inputs.items()]
    while names and names[-1] == "":
        names.pop()
    feeds = {name: value for name, value in inputs.items() if value is not None}
    node = helper.make_node(op, names, list(outputs), **attrs)
    graph = helper.make_graph(
        [node],
        op.lower(),
        [
            helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape
            )
            for name, value in feeds.items()
        ],
        [helper.make_empty_tensor_value_info(name) for name in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model, feeds


def reference_outputs(
    model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], use_ort: bool = True
) -> list[np.ndarray]:
    """onnxruntime's outputs (onnx's ReferenceEvaluator where onnxruntime lacks a feature),
    its int8 weights made unsigned as tvmflow's reference does (exact without VNNI)."""
    if use_ort:
        exact = onnx.ModelProto()
        exact.CopyFrom(model)
        unsigned_integer_weights(exact)
        session = ort.InferenceSession(
            exact.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return list(session.run(None, dict(feeds)))
    return list(ReferenceEvaluator(model).run(None, dict(feeds)))


def assert_matches(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    use_ort: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> None:
    expected = reference_outputs(model, feeds, use_ort)
    actual = list(TvmflowBackend.run_model(model, dict(feeds)))
    assert len(actual) == len(expected)
    for name, got, want in zip([o.name for o in model.graph.output], actual, expected, strict=True):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


def constant_input_model(
    op: str,
    inputs: dict[str, np.ndarray],
    constants: dict[str, np.ndarray],
    order: list[str],
    opset: int = 17,
    **attrs: Any,
) -> onnx.ModelProto:
    """A model of one `op` node whose `constants` are initializers (shape inference needs
    them); `order` names the node's inputs, "" for one left out; opset 17 or `opset`."""
    node = helper.make_node(op, order, ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        op.lower(),
        [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in inputs.items()
        ],
        [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)
