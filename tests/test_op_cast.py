"""Cast / CastLike to and from float8, float4 and int4/int2 (tvmflow.ops.cast, tvmflow.narrow).

onnxruntime's Python API cannot take or return these dtypes, so models with narrow inputs or
outputs are checked against onnx's ReferenceEvaluator (ml_dtypes' conversions), bit for bit
over every float16 value plus float32 edge cases; a float32 → float8 → float32 round trip,
which onnxruntime can run, is checked against onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.onnx_ops import reference_outputs
from tvmflow.backend import TvmflowBackend
from tvmflow.errors import TvmflowError

FLOAT8 = {
    "float8_e4m3fn": TensorProto.FLOAT8E4M3FN,
    "float8_e4m3fnuz": TensorProto.FLOAT8E4M3FNUZ,
    "float8_e5m2": TensorProto.FLOAT8E5M2,
    "float8_e5m2fnuz": TensorProto.FLOAT8E5M2FNUZ,
}
SMALL_FLOATS = {**FLOAT8, "float4_e2m1fn": TensorProto.FLOAT4E2M1}
SMALL_INTS = {
    "int4": TensorProto.INT4,
    "uint4": TensorProto.UINT4,
    "int2": TensorProto.INT2,
    "uint2": TensorProto.UINT2,
}


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def _model(
    inputs: Mapping[str, tuple[int, tuple[int, ...]]],
    nodes: list[onnx.NodeProto],
    outputs: list[str],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "casts",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _assert_same_bits(got: np.ndarray, want: np.ndarray, name: str) -> None:
    """Same dtype, same NaNs, same bits everywhere else (so -0 and 0 differ)."""
    assert got.dtype == want.dtype, name
    nan = np.isnan(want.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan, err_msg=name)
    bits = (got.view(np.uint8) if got.dtype.itemsize == 1 else got.view(np.uint16)) & 0xFF
    ref = (want.view(np.uint8) if want.dtype.itemsize == 1 else want.view(np.uint16)) & 0xFF
    if got.dtype.itemsize == 1:
        np.testing.assert_array_equal(bits[~nan], ref[~nan], err_msg=name)
    else:
        np.testing.assert_array_equal(got[~nan], want[~nan], err_msg=name)


def _check_against_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    expected = reference_outputs(model, feeds, use_ort=False)
    actual = TvmflowBackend.run_model(model, feeds)
    for output, got, want in zip(model.graph.output, actual, expected, strict=True):
        assert got.shape == want.shape, output.name
        _assert_same_bits(got, want, output.name)


def _float_sweep() -> np.ndarray:
    """Every float16 value (NaNs, Infs, subnormals), float32 values at the formats' edges."""
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    edges = np.array(
        [1e6, 1e-7, 1e-45, 3.4e38, 448, 456, 464, 464.5, 480, 240, 244, 248, 57344, 61440,
         61441, 5, 6, 6.5, 7, 0.25, 0.75, 2.0**-9, 2.0**-10, 2.0**-17, 3 * 2.0**-11],
        np.float32,
    )  # fmt: skip
    return np.concatenate([halves, edges, -edges])


def test_float_to_float8_and_float4_is_bit_exact() -> None:
    x = _float_sweep()
    nodes, outputs = [], []
    for name, to in SMALL_FLOATS.items():
        for saturate in (1, 0) if name in FLOAT8 else (1,):
            out = f"{name}_sat{saturate}"
            nodes.append(helper.make_node("Cast", ["x"], [out], to=to, saturate=saturate))
            outputs.append(out)
    model = _model({"x": (TensorProto.FLOAT, x.shape)}, nodes, outputs)
    _check_against_reference(model, {"x": x})


def test_float8_and_float4_to_float_is_exact() -> None:
    inputs, feeds, nodes, outputs = {}, {}, [], []
    for name, elem in SMALL_FLOATS.items():
        codes = np.arange(16 if name == "float4_e2m1fn" else 256, dtype=np.uint8)
        feeds[name] = codes.view(getattr(ml_dtypes, name))
        inputs[name] = (elem, codes.shape)
        for to, suffix in ((TensorProto.FLOAT, "f32"), (TensorProto.FLOAT16, "f16")):
            nodes.append(helper.make_node("Cast", [name], [f"{name}_{suffix}"], to=to))
            outputs.append(f"{name}_{suffix}")
    _check_against_reference(_model(inputs, nodes, outputs), feeds)


def test_narrow_integers_wrap_like_onnx_reference() -> None:
    x = np.arange(-20, 20, 0.25, dtype=np.float32)
    nodes = [helper.make_node("Cast", ["x"], [name], to=elem) for name, elem in SMALL_INTS.items()]
    back = [helper.make_node("Cast", [name], [f"{name}_f"], to=1) for name in SMALL_INTS]
    model = _model(
        {"x": (TensorProto.FLOAT, x.shape)},
        nodes + back,
        [*SMALL_INTS, *(f"{name}_f" for name in SMALL_INTS)],
    )
    _check_against_reference(model, {"x": x})


def test_castlike_takes_the_narrow_dtype_of_its_second_input() -> None:
    x = _float_sweep()[::7]
    like = np.zeros(1, ml_dtypes.float8_e5m2fnuz)
    model = _model(
        {"x": (TensorProto.FLOAT, x.shape), "like": (TensorProto.FLOAT8E5M2FNUZ, (1,))},
        [
            helper.make_node("CastLike", ["x", "like"], ["y"], saturate=0),
            helper.make_node("CastLike", ["y", "x"], ["z"]),
        ],
        ["y", "z"],
    )
    _check_against_reference(model, {"x": x, "like": like})


def test_float8_round_trip_matches_onnxruntime() -> None:
    """float32 in and out: onnxruntime runs the float8 casts between."""
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32) * 300
    nodes, outputs = [], []
    for name, to in FLOAT8.items():
        nodes.append(helper.make_node("Cast", ["x"], [name], to=to))
        nodes.append(helper.make_node("Cast", [name], [f"{name}_back"], to=TensorProto.FLOAT))
        outputs.append(f"{name}_back")
    model = _model({"x": (TensorProto.FLOAT, x.shape)}, nodes, outputs)
    model.opset_import[0].version = 21  # onnxruntime's CPU kernels cover float8 casts here
    expected = reference_outputs(model, {"x": x})
    actual = TvmflowBackend.run_model(model, {"x": x})
    for name, got, want in zip(outputs, actual, expected, strict=True):
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_string_tensors_are_refused_as_unsupported() -> None:
    x = np.zeros(2, np.float32)
    model = _model(
        {"x": (TensorProto.FLOAT, x.shape)},
        [
            helper.make_node("Cast", ["x"], ["s"], to=TensorProto.STRING),
            helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT),
        ],
        ["y"],
    )
    with pytest.raises(TvmflowError, match=r"^unsupported dtype: Cast on string tensors \('s'\)"):
        TvmflowBackend.run_model(model, {"x": x})


def test_float8_input_artifact_runs_on_ml_dtypes_arrays(tmp_path: Path) -> None:
    """tvmflow.compile + tvmflow.load with a float8 input and an int4 output: the manifest
    names the real dtypes and the runtime converts at the edges. onnxruntime cannot be fed
    float8, so verifying is refused in one line and the artifact is built with verify=False."""
    import tvmflow

    model = _model(
        {"x": (TensorProto.FLOAT8E4M3FN, (16,))},
        [
            helper.make_node("Cast", ["x"], ["wide"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["wide"], ["y"], to=TensorProto.INT4),
        ],
        ["y"],
    )
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    with pytest.raises(TvmflowError, match="cannot take input 'x' of float8_e4m3fn.*--no-verify"):
        tvmflow.compile(path, "x86", output=tmp_path / "verified", use_shipped_logs=False)
    tvmflow.compile(path, "x86", output=tmp_path / "out", use_shipped_logs=False, verify=False)
    compiled = tvmflow.load(tmp_path / "out")
    assert [(s.dtype, s.shape) for s in compiled.inputs] == [("float8_e4m3fn", (16,))]
    assert [(s.dtype, s.shape) for s in compiled.outputs] == [("int4", (16,))]
    x = np.linspace(-20, 20, 16).astype(ml_dtypes.float8_e4m3fn)
    (want,) = reference_outputs(model, {"x": x}, use_ort=False)
    got = compiled.run({"x": x})["y"]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.astype(np.int8), want.astype(np.int8))


def test_narrow_dtypes_inside_an_if_branch() -> None:
    """Subgraphs are retyped too: an If whose branch rounds through float8 and int4."""
    x = _float_sweep()[::97]
    then_graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["f8"], to=TensorProto.FLOAT8E5M2),
            helper.make_node("Cast", ["f8"], ["i4"], to=TensorProto.INT4),
            helper.make_node("Cast", ["i4"], ["then_y"], to=TensorProto.FLOAT),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, x.shape)],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["else_y"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, x.shape)],
    )
    model = _model(
        {"x": (TensorProto.FLOAT, x.shape), "cond": (TensorProto.BOOL, ())},
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph)],
        ["y"],
    )
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        (want,) = reference_outputs(model, feeds, use_ort=False)
        (got,) = TvmflowBackend.run_model(model, feeds)
        np.testing.assert_array_equal(got, want)
