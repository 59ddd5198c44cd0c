"""QuantizeLinear / DequantizeLinear, blocked and narrow (tvmflow.ops.quantize_linear).

Blocked int8/uint8 quantization runs in onnxruntime and is checked against it; onnxruntime's
Python API cannot pass int4/int2/float8/float4 tensors, so those are checked against onnx's
ReferenceEvaluator, exactly (quantized values) or to float32 rounding (dequantized ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_ops import reference_outputs
from tvmflow.backend import TvmflowBackend

RNG = np.random.default_rng(0)
X = RNG.uniform(-40, 40, (4, 6)).astype(np.float32)
X[0, :3] = [np.inf, -np.inf, 2.5]  # saturation and round-half-to-even


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


Pair = tuple[Sequence[np.ndarray | None], Mapping[str, Any], Mapping[str, Any]]


def _pairs(x: np.ndarray, pairs: Mapping[str, Pair]) -> onnx.ModelProto:
    """x → QuantizeLinear → `NAME_q` → DequantizeLinear → `NAME_dq` per named pair; scales and
    zero points are initializers; both the quantized and dequantized tensors are outputs."""
    nodes, inits, outputs = [], [], []
    for name, (params, q_attrs, dq_attrs) in pairs.items():
        names = [f"{name}_p{i}" if p is not None else "" for i, p in enumerate(params)]
        inits += [
            numpy_helper.from_array(p, n)
            for n, p in zip(names, params, strict=True)
            if p is not None
        ]
        nodes.append(helper.make_node("QuantizeLinear", ["x", *names], [f"{name}_q"], **q_attrs))
        dq_inputs = [f"{name}_q", *names]
        nodes.append(helper.make_node("DequantizeLinear", dq_inputs, [f"{name}_dq"], **dq_attrs))
        outputs += [f"{name}_q", f"{name}_dq"]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _check(model: onnx.ModelProto, use_ort: bool, x: np.ndarray = X) -> None:
    """Quantized outputs exactly, dequantized ones to float32 rounding."""
    want = reference_outputs(model, {"x": x}, use_ort=use_ort)
    got = TvmflowBackend.run_model(model, {"x": x})
    for output, a, b in zip(model.graph.output, got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, output.name
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        rtol = 1e-6 if output.name.endswith("_dq") else 0
        np.testing.assert_allclose(a32, b32, rtol=rtol, atol=0, err_msg=output.name)


def test_blocked_quantize_and_dequantize_match_onnxruntime() -> None:
    scale = RNG.uniform(0.1, 0.5, (4, 2)).astype(np.float32)  # blocks of 4 along axis 1 (6)
    zp = RNG.integers(-3, 3, (4, 2)).astype(np.int8)
    blocked = {"axis": 1, "block_size": 4}
    model = _pairs(
        X, {"int8": ([scale, zp], blocked, blocked), "uint8": ([scale, None], blocked, blocked)}
    )
    _check(model, use_ort=True)


def test_narrow_integer_quantize_dequantize_per_axis() -> None:
    scale = np.array([0.5, 2.0, 8.0, 0.25], np.float32)  # per axis 0
    pairs = {
        dtype: (
            [scale, np.array([1, 0, 1, 0], getattr(ml_dtypes, dtype))],
            {"axis": 0},
            {"axis": 0},
        )
        for dtype in ("int4", "uint4", "int2", "uint2")
    }
    finite = np.nan_to_num(X, posinf=1e4, neginf=-1e4)  # the reference casts Inf to int32 (UB)
    _check(_pairs(finite, pairs), use_ort=False, x=finite)


def test_small_float_quantize_dequantize() -> None:
    scale = np.array(0.125, np.float32)
    f16 = {"output_dtype": TensorProto.FLOAT16}
    pairs = {
        f"{dtype}_sat{saturate}": (
            [scale, np.zeros((), getattr(ml_dtypes, dtype))],
            {"saturate": saturate} if dtype.startswith("float8") else {},
            f16,
        )
        for dtype, saturate in [
            ("float8_e4m3fn", 1),
            ("float8_e5m2", 0),
            ("float8_e4m3fnuz", 1),
            ("float8_e5m2fnuz", 0),
            ("float4_e2m1fn", 1),
        ]
    }
    _check(_pairs(X, pairs), use_ort=False)


def test_int4_weight_only_model_compiles_verified_against_onnxruntime(tmp_path: Path) -> None:
    """The common shape of an int4 weight-only quantized model: blocked DQ of an int4
    initializer feeding a MatMul. fp32 at the edges, so tvmflow.compile verifies it."""
    import tvmflow

    weights = RNG.integers(-8, 8, (32, 8)).astype(ml_dtypes.int4)
    scale = RNG.uniform(0.01, 0.1, (4, 8)).astype(np.float32)  # blocks of 8 along axis 0
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], axis=0, block_size=8),
            helper.make_node("MatMul", ["x", "wf"], ["y"]),
        ],
        "int4_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 32))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 8))],
        initializer=[numpy_helper.from_array(weights, "w"), numpy_helper.from_array(scale, "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    artifact = tvmflow.compile(path, "x86", output=tmp_path / "out", use_shipped_logs=False)
    assert artifact.manifest.accuracy  # compared with onnxruntime within tolerance
    x = RNG.standard_normal((2, 32)).astype(np.float32)
    (want,) = reference_outputs(model, {"x": x})
    got = tvmflow.load(tmp_path / "out").run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
