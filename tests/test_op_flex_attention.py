"""ai.onnx.preview FlexAttention against onnx's reference (onnxruntime lacks the op).

GQA with a causal score_mod built from Shape/Range (folded once the scores' shape is known)
and a prob_mod; and the folding of a modifier whose constants live in the outer graph (where
the frontend's onnxslim may hoist them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_ops import assert_matches
from tvmflow.ops.common import run_graph


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def _causal_score_mod() -> onnx.GraphProto:
    consts: dict[str, np.ndarray] = {
        "zero": np.array(0, np.int64),
        "one": np.array(1, np.int64),
        "two": np.array(2, np.int64),
        "three": np.array(3, np.int64),
        "rows": np.array([-1, 1], np.int64),
        "cols": np.array([1, -1], np.int64),
        "neg_inf": np.array(-np.inf, np.float32),
    }
    nodes = [
        helper.make_node("Shape", ["s"], ["dims"]),
        helper.make_node("Gather", ["dims", "two"], ["q_len"]),
        helper.make_node("Gather", ["dims", "three"], ["k_len"]),
        helper.make_node("Range", ["zero", "q_len", "one"], ["q_range"]),
        helper.make_node("Range", ["zero", "k_len", "one"], ["k_range"]),
        helper.make_node("Reshape", ["q_range", "rows"], ["q_idx"]),
        helper.make_node("Reshape", ["k_range", "cols"], ["k_idx"]),
        helper.make_node("GreaterOrEqual", ["q_idx", "k_idx"], ["keep"]),
        helper.make_node("Where", ["keep", "s", "neg_inf"], ["s_out"]),
    ]
    scores = ["B", "H", "L", "S"]
    return helper.make_graph(
        nodes,
        "causal",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, scores)],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, scores)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )


def _prob_mod() -> onnx.GraphProto:
    probs = ["B", "H", "L", "S"]
    return helper.make_graph(
        [helper.make_node("Mul", ["p", "gain"], ["p_out"])],
        "gain",
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, probs)],
        [helper.make_tensor_value_info("p_out", TensorProto.FLOAT, probs)],
        [numpy_helper.from_array(np.array(0.5, np.float32), "gain")],
    )


def test_gqa_with_score_and_prob_modifiers() -> None:
    node = helper.make_node(
        "FlexAttention",
        ["Q", "K", "V"],
        ["Y"],
        domain="ai.onnx.preview",
        score_mod=_causal_score_mod(),
        prob_mod=_prob_mod(),
        scale=0.3,
    )
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "flex",
        [
            helper.make_tensor_value_info("Q", f, [2, 4, 5, 8]),
            helper.make_tensor_value_info("K", f, [2, 2, 5, 8]),
            helper.make_tensor_value_info("V", f, [2, 2, 5, 6]),
        ],
        [helper.make_tensor_value_info("Y", f, [2, 4, 5, 6])],
    )
    opsets = [helper.make_opsetid("", 22), helper.make_opsetid("ai.onnx.preview", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    rng = np.random.default_rng(0)
    feeds = {
        "Q": rng.standard_normal((2, 4, 5, 8)).astype(np.float32),
        "K": rng.standard_normal((2, 2, 5, 8)).astype(np.float32),
        "V": rng.standard_normal((2, 2, 5, 6)).astype(np.float32),
    }
    assert_matches(model, feeds, use_ort=False)


def test_modifier_reading_outer_constants_is_folded() -> None:
    from tvm import relax

    graph = _causal_score_mod()
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    outer = {name: relax.const(a, str(a.dtype)) for name, a in arrays.items()}
    del graph.initializer[:]  # the modifier now reads them from the outer graph
    bb = relax.BlockBuilder()
    scores = relax.Var("s", relax.TensorType((1, 2, 3, 4), "float32"))
    with bb.function("main", [scores]):
        with bb.dataflow():
            (out,) = run_graph(bb, graph, {"s": scores}, [outer, {}], 22)
            gv = bb.emit_output(out)
        bb.emit_func_output(gv)
    text = bb.get()["main"].script()
    assert "R.where" in text
    assert "R.arange" not in text and "R.shape_of" not in text  # folded to a constant mask
