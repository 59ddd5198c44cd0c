"""An LLM-style decoder step (RMSNorm, RoPE, GQA Attention with a KV cache) compiled end to end.

The converters are checked one by one elsewhere; this is the shape they take in a real
decoder: opset-23 ops in one graph, compiled for the host preset by `tvmflow.compile`, whose
verification against onnxruntime is on (it raises AccuracyError on a mismatch), then run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import tvmflow
from tvmflow.runtime import load

HIDDEN, HEADS, KV_HEADS, HEAD, STEPS, PAST = 32, 4, 2, 8, 3, 5


def decoder_step() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    angles = np.outer(np.arange(64), 1.0 / 10000 ** (np.arange(0, HEAD, 2) / HEAD))
    consts = {
        "gamma": (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32),
        "w_q": weight(HIDDEN, HEADS * HEAD),
        "w_k": weight(HIDDEN, KV_HEADS * HEAD),
        "w_v": weight(HIDDEN, KV_HEADS * HEAD),
        "w_o": weight(HEADS * HEAD, HIDDEN),
        "cos": np.cos(angles).astype(np.float32),
        "sin": np.sin(angles).astype(np.float32),
        "positions": (PAST + np.arange(STEPS))[None].astype(np.int64),
    }
    nodes = [
        helper.make_node("RMSNormalization", ["x", "gamma"], ["h"], axis=-1),
        helper.make_node("MatMul", ["h", "w_q"], ["q"]),
        helper.make_node("MatMul", ["h", "w_k"], ["k"]),
        helper.make_node("MatMul", ["h", "w_v"], ["v"]),
        helper.make_node(
            "RotaryEmbedding", ["q", "cos", "sin", "positions"], ["q_rot"], num_heads=HEADS
        ),
        helper.make_node(
            "RotaryEmbedding", ["k", "cos", "sin", "positions"], ["k_rot"], num_heads=KV_HEADS
        ),
        helper.make_node(
            "Attention",
            ["q_rot", "k_rot", "v", "", "past_key", "past_value"],
            ["attn", "present_key", "present_value"],
            q_num_heads=HEADS,
            kv_num_heads=KV_HEADS,
            is_causal=1,
        ),
        helper.make_node("MatMul", ["attn", "w_o"], ["o"]),
        helper.make_node("Add", ["x", "o"], ["y"]),
    ]
    cache = [1, KV_HEADS, PAST, HEAD]
    present = [1, KV_HEADS, PAST + STEPS, HEAD]
    graph = helper.make_graph(
        nodes,
        "decoder_step",
        [
            helper.make_tensor_value_info("x", f, [1, STEPS, HIDDEN]),
            helper.make_tensor_value_info("past_key", f, cache),
            helper.make_tensor_value_info("past_value", f, cache),
        ],
        [
            helper.make_tensor_value_info("y", f, [1, STEPS, HIDDEN]),
            helper.make_tensor_value_info("present_key", f, present),
            helper.make_tensor_value_info("present_value", f, present),
        ],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_decoder_step_compiles_verified_and_matches_onnxruntime(tmp_path: Path) -> None:
    path = tmp_path / "decoder_step.onnx"
    onnx.save(decoder_step(), str(path))
    artifact = tvmflow.compile(path, "x86", output=tmp_path / "out")  # verified on the way
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.standard_normal((1, STEPS, HIDDEN)).astype(np.float32),
        "past_key": rng.standard_normal((1, KV_HEADS, PAST, HEAD)).astype(np.float32),
        "past_value": rng.standard_normal((1, KV_HEADS, PAST, HEAD)).astype(np.float32),
    }
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)
    got = load(artifact.directory).run(feeds)
    for name, expected in zip(["y", "present_key", "present_value"], want, strict=True):
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-5, err_msg=name)
