"""Integer matmuls and convolutions (tvmflow.ops.quantized) bit-exact against onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tests.onnx_ops import reference_outputs
from tvmflow.backend import TvmflowBackend


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


RNG = np.random.default_rng(0)
M, K, N = 8, 36, 32


def _full_range(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def _model(
    op: str,
    inputs: list[tuple[str, np.ndarray, bool]],
    opset: int,
    **attrs: Any,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One `op` node; each input is (name, value, is_initializer)."""
    graph_inputs, inits, feeds = [], [], {}
    for name, value, constant in inputs:
        if constant:
            inits.append(numpy_helper.from_array(value, name))
        else:
            feeds[name] = value
            dtype = helper.np_dtype_to_tensor_dtype(value.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, dtype, value.shape))
    node = helper.make_node(op, [name for name, _, _ in inputs], ["y"], **attrs)
    y = helper.make_empty_tensor_value_info("y")
    graph = helper.make_graph([node], op.lower(), graph_inputs, [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model, feeds


def _assert_exact(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    [want] = reference_outputs(model, feeds)
    [got] = TvmflowBackend.run_model(model, feeds)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("a_dtype", "b_dtype", "b_zp"),
    [
        (np.uint8, np.int8, "scalar"),
        (np.int8, np.int8, "per-column"),
        (np.uint8, np.uint8, "per-column"),
        (np.int8, np.uint8, None),
    ],
)
def test_matmul_integer_is_bit_exact(a_dtype: type, b_dtype: type, b_zp: str | None) -> None:
    """Every signedness pairs with full-range data and zero points: the u8 x i8 shifts and
    the zero-point terms cancel exactly (int32 sums as onnxruntime's)."""
    inputs = [
        ("a", _full_range(a_dtype, (2, M, K)), False),
        ("b", _full_range(b_dtype, (K, N)), True),
        ("a_zp", _full_range(a_dtype, ()), True),
    ]
    if b_zp is not None:
        inputs.append(("b_zp", _full_range(b_dtype, () if b_zp == "scalar" else (N,)), True))
    _assert_exact(*_model("MatMulInteger", inputs, 13))


def test_matmul_integer_with_activation_weight() -> None:
    """B an input, not a constant (no prepacking): still exact."""
    inputs = [
        ("a", _full_range(np.int8, (M, K)), False),
        ("b", _full_range(np.uint8, (K, N)), False),
    ]
    _assert_exact(*_model("MatMulInteger", inputs, 13))


@pytest.mark.parametrize("out_dtype", [np.uint8, np.int8])
def test_qlinear_matmul_requantizes_as_onnxruntime(out_dtype: type) -> None:
    """onnxruntime's kernels pair the output type with A's."""
    inputs = [
        ("a", _full_range(out_dtype, (M, K)), False),
        ("a_scale", np.array(0.02, np.float32), True),
        ("a_zp", np.array(5, out_dtype), True),
        ("b", _full_range(np.int8, (K, N)), True),
        ("b_scale", RNG.uniform(0.001, 0.01, N).astype(np.float32), True),
        ("b_zp", np.zeros(N, np.int8), True),
        ("y_scale", np.array(0.5, np.float32), True),
        ("y_zp", np.array(3, out_dtype), True),
    ]
    _assert_exact(*_model("QLinearMatMul", inputs, 13))


def test_conv_integer_pads_with_the_zero_point() -> None:
    inputs = [
        ("x", _full_range(np.uint8, (1, 3, 9, 9)), False),
        ("w", _full_range(np.uint8, (4, 3, 3, 3)), True),
        ("x_zp", np.array(7, np.uint8), True),
        ("w_zp", np.array(130, np.uint8), True),
    ]
    _assert_exact(*_model("ConvInteger", inputs, 10, pads=[1, 1, 1, 1], strides=[2, 2]))


def test_qlinear_conv_with_per_channel_scales_and_bias() -> None:
    inputs = [
        ("x", _full_range(np.uint8, (1, 3, 8, 8)), False),
        ("x_scale", np.array(0.03, np.float32), True),
        ("x_zp", np.array(120, np.uint8), True),
        ("w", _full_range(np.int8, (5, 3, 3, 3)), True),
        ("w_scale", RNG.uniform(0.002, 0.02, 5).astype(np.float32), True),
        ("w_zp", np.zeros(5, np.int8), True),
        ("y_scale", np.array(0.4, np.float32), True),
        ("y_zp", np.array(100, np.uint8), True),
        ("bias", RNG.integers(-5000, 5000, 5).astype(np.int32), True),
    ]
    _assert_exact(*_model("QLinearConv", inputs, 10, pads=[1, 1, 1, 1]))
