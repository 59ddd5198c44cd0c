"""Ops TVM's importer converts but that crashed or came out wrong, against onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from tests.onnx_ops import assert_matches, one_node_model, reference_outputs


@pytest.fixture(autouse=True)
def build_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path / "builds"))


def some_slow(values: list[Any], ids: list[str], fast: set[str]) -> list[Any]:
    """Parametrized cases by id; those not in `fast` are marked slow (CI runs the rest)."""
    return [
        pytest.param(
            *(v if isinstance(v, tuple) else (v,)),
            id=i,
            marks=() if i in fast else pytest.mark.slow,
        )
        for v, i in zip(values, ids, strict=True)
    ]


RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4, 5)).astype(np.float32)


def test_shape_output_is_an_int64_tensor() -> None:
    """TVM returns a Shape node's result as a Relax shape value; as a model output it must be
    a tensor (it was refused as 'not a tensor of known rank')."""
    model, feeds = one_node_model("Shape", {"x": X}, ["y"], 21, start=1, end=-1)
    assert_matches(model, feeds)


@pytest.mark.parametrize("reduction", ["none", "mul"])
def test_scatter_elements_compiles_through_the_cpu_rules(reduction: str) -> None:
    """TVM's scatter_elements kernel (one opaque block no rule schedules) crashed
    SplitLayoutRewritePreproc; it is now set aside while the weight repackings are split."""
    data = RNG.standard_normal((4, 5)).astype(np.float32)
    indices = np.array([[1, 0, 3, 2, -1], [2, 3, 0, 1, 0]], np.int64)
    updates = RNG.standard_normal((2, 5)).astype(np.float32)
    model, feeds = one_node_model(
        "ScatterElements",
        {"data": data, "indices": indices, "updates": updates},
        ["y"],
        18,
        axis=0,
        reduction=reduction,
    )
    assert_matches(model, feeds)


def test_weight_prepacks_are_split_beside_an_opaque_kernel() -> None:
    """The unit behind the ScatterElements fix: a module holding a prepacked matmul (a rule
    repacks its constant weight) and an opaque scatter kernel no rule schedules."""
    import tvm
    from tvm import relax

    from tests.kernels import TARGET, const, fused_module
    from tvmflow.schedules import apply_default_schedules, has_prepack

    def body(x: relax.Expr, idx: relax.Expr) -> relax.Expr:
        y = relax.op.matmul(x, const((64, 64)))
        return relax.op.scatter_elements(y, idx, y, axis=0)

    mod = fused_module({"x": ((64, 64), "float32"), "idx": ((64, 64), "int64")}, body)
    out = apply_default_schedules(mod, TARGET)
    kernels = {
        gv.name_hint: f for gv, f in out.functions_items() if isinstance(f, tvm.tirx.PrimFunc)
    }
    assert any("scatter" in name for name in kernels)
    assert any(name.endswith("_prepacked") for name in kernels), sorted(kernels)
    assert not any(has_prepack(f) for f in kernels.values())


def test_nonzero_output_has_a_data_dependent_dim() -> None:
    """A data-dependent output dim is DYNAMIC in the manifest and any size at run time."""
    from tvmflow.backend import TvmflowBackend
    from tvmflow.manifest import DYNAMIC

    model, feeds = one_node_model("NonZero", {"x": X > 0}, ["y"], 13)
    assert_matches(model, feeds)
    rep = TvmflowBackend.prepare(model)
    compiled = next(iter(rep._compiled.values()))
    assert compiled.outputs[0].shape == (3, DYNAMIC)
    assert compiled.outputs[0].describe() == "y: int64[3,?]"
    for data in (X > 1, np.zeros_like(X, bool)):  # other counts, including none
        want = np.stack(np.nonzero(data))
        np.testing.assert_array_equal(rep.run([data])[0], want)


def test_unique_is_refused_since_only_tvms_compiler_runs_it() -> None:
    """TVM lowers Unique to `relax.run.unique`, a function of its compiler library: such an
    artifact ran where it was compiled but not where tvmflow's runtime loads it. The compile
    says so instead of shipping it."""
    from tvmflow.errors import RuntimeLibraryError

    x = np.array([[1, 2, 2], [3, 1, 2], [1, 2, 2]], np.float32)
    model, feeds = one_node_model("Unique", {"x": x}, ["y", "idx", "inv", "cnt"], 11, axis=0)
    with pytest.raises(RuntimeLibraryError, match="relax.run.unique"):
        assert_matches(model, feeds)


@pytest.mark.parametrize(
    ("center_point_box", "iou", "score"),
    some_slow(
        [(0, 0.3, 0.2), (1, 0.3, 0.2), (0, 0.0, None), (0, None, None), (0, 1 / 7, 0.0)],
        ids=["corners", "center", "iou-zero", "no-thresholds", "iou-tie"],
        fast={"iou-zero", "iou-tie"},
    ),
)
def test_non_max_suppression_matches_onnxruntime(
    center_point_box: int, iou: float | None, score: float | None
) -> None:
    """TVM typed the selected indices with the padded size, suppressed at IoU == threshold,
    never at threshold 0, and took 0.5 for an absent threshold (ONNX: 0); tvmflow's kernel
    replaced it."""
    boxes = RNG.uniform(0, 1, (2, 6, 4)).astype(np.float32)
    boxes[..., 2:] += boxes[..., :2]  # x2 > x1, y2 > y1 (or width, height)
    boxes[0, :2] = np.array([[0, 0, 1, 1], [0.5, 0.5, 1.5, 1.5]])  # IoU exactly 1/7
    if center_point_box:
        boxes[0, :2] = np.array([[0.5, 0.5, 1, 1], [1, 1, 1, 1]])
    scores = RNG.uniform(0, 1, (2, 3, 6)).astype(np.float32)  # TVM: negative = suppressed

    def scalar(value: float | None) -> np.ndarray | None:
        return None if value is None else np.array([value], np.float32)

    model, feeds = one_node_model(
        "NonMaxSuppression",
        {
            "boxes": boxes,
            "scores": scores,
            "max_out": np.array([4], np.int64),
            "iou": scalar(iou),
            "score": scalar(score),
        },
        ["y"],
        11,
        center_point_box=center_point_box,
    )
    assert_matches(model, feeds)


@pytest.mark.parametrize("center_point_box", [0, 1])
def test_non_max_suppression_on_crowded_boxes(center_point_box: int) -> None:
    """Many overlapping boxes (corners in either order, some of zero area, scores tied and
    negative), two batches of three classes, a limit some classes reach: one artifact,
    onnxruntime's selection on each input."""
    from tvmflow.backend import TvmflowBackend

    rng = np.random.default_rng(7)
    n = 60
    model, _ = one_node_model(
        "NonMaxSuppression",
        {
            "boxes": np.zeros((2, n, 4), np.float32),
            "scores": np.zeros((2, 3, n), np.float32),
            "max_out": np.array([9], np.int64),
            "iou": np.array([0.4], np.float32),
            "score": np.array([-0.5], np.float32),
        },
        ["y"],
        11,
        center_point_box=center_point_box,
    )
    rep = TvmflowBackend.prepare(model)
    for _ in range(3):
        boxes = rng.uniform(0, 4, (2, n, 4)).astype(np.float32)
        boxes[:, ::7, 2] = boxes[:, ::7, 0]  # zero width
        scores = rng.choice(np.linspace(-1, 1, 25), (2, 3, n)).astype(np.float32)  # ties
        feeds: dict[str, np.ndarray] = {
            "boxes": boxes,
            "scores": scores,
            "max_out": np.array([9], np.int64),
            "iou": np.array([0.4], np.float32),
            "score": np.array([-0.5], np.float32),
        }
        want = reference_outputs(model, feeds)[0]
        got = rep.run(list(feeds.values()))[0]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("base", "exponent"),
    [
        (X, np.array([2, 3, -1, 0, 1], np.int64)),  # float ** int: exponent cast to float
        (np.array([1, 2, 3, -3], np.int32), np.array([4.0, 5.0, 0.5, 3.0], np.float32)),
        (np.array([[1, 2, -3, 7]], np.int64), np.array([[5], [0], [2]], np.int64)),
        (np.array([5, -2, 1, -1], np.int32), np.array([-1, 3, -4, -3], np.int32)),
    ],
    ids=["float-int", "int-float", "int-int-broadcast", "int-negative-exponent"],
)
def test_pow_mixed_and_integer_types(base: np.ndarray, exponent: np.ndarray) -> None:
    model, feeds = one_node_model("Pow", {"x": base, "y": exponent}, ["z"], 15)
    assert_matches(model, feeds)


@pytest.mark.parametrize("axis", [0, -2, 1])
def test_rms_normalization_over_every_axis(axis: int) -> None:
    """axis 0 (and -rank) covers the whole tensor, which TVM's rms_norm kernel failed on."""
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    scale = RNG.standard_normal((4, 6)[axis:]).astype(np.float32)
    model, feeds = one_node_model(
        "RMSNormalization", {"x": x, "scale": scale}, ["y"], 23, axis=axis, epsilon=1e-3
    )
    assert_matches(model, feeds)


IMAGE = RNG.standard_normal((1, 2, 7, 9)).astype(np.float32)


def _resize(x: np.ndarray, opset: int = 19, **attrs: object) -> tuple:
    inputs: dict[str, np.ndarray | None] = {"x": x, "roi": None, "scales": None, "sizes": None}
    for key in ("roi", "scales", "sizes"):
        if key in attrs:
            inputs[key] = np.asarray(attrs.pop(key), np.int64 if key == "sizes" else np.float32)
    return one_node_model("Resize", inputs, ["y"], opset, **attrs)


@pytest.mark.parametrize(
    "attrs",
    some_slow(
        [
            {"mode": "linear", "scales": [1, 1, 0.6, 0.8]},  # in * scale not whole: TVM used in/out
            {"mode": "cubic", "scales": [1, 1, 0.6, 0.6], "antialias": 1},
            {"mode": "linear", "sizes": [1, 2, 4, 4], "antialias": 1},
            {
                "mode": "cubic",
                "scales": [1, 1, 0.8, 0.8],
                "coordinate_transformation_mode": "align_corners",
            },
            {
                "mode": "linear",
                "scales": [1, 1, 1.5, 0.7],
                "coordinate_transformation_mode": "half_pixel_symmetric",
            },
            {"mode": "nearest", "sizes": [5, 4], "axes": [3, 2]},
            {"mode": "nearest", "sizes": [1, 2, 14, 12], "keep_aspect_ratio_policy": "not_smaller"},
            {
                "mode": "linear",
                "scales": [1, 1, 0.2, 0.5],
                "coordinate_transformation_mode": "align_corners",
            },
            {
                "mode": "linear",
                "roi": [0.2, 0.6, 1.2, 0.9],
                "sizes": [4, 5],
                "axes": [2, 3],
                "coordinate_transformation_mode": "tf_crop_and_resize",
                "extrapolation_value": 7.0,
            },
        ],
        ids=[
            "downsample-linear",
            "cubic-antialias",
            "linear-antialias-sizes",
            "cubic-align-corners",
            "half-pixel-symmetric",
            "axes",
            "keep-aspect",
            "align-corners-to-one",
            "crop-extrapolate",
        ],
        fast={"downsample-linear", "cubic-antialias", "crop-extrapolate"},
    ),
)
def test_resize_matches_onnxruntime(attrs: dict) -> None:
    # align_corners on a non-whole in * scale: ONNX maps back with that product, onnxruntime
    # with the rounded size; ONNX's own reference (its node tests' data) decides.
    use_ort = attrs.get("coordinate_transformation_mode") != "align_corners"
    model, feeds = _resize(IMAGE, **attrs)
    assert_matches(model, feeds, use_ort=use_ort)


def test_resize_of_integers_and_opset_10() -> None:
    pixels = RNG.integers(0, 255, (1, 3, 5, 6)).astype(np.uint8)
    model, feeds = _resize(pixels, mode="linear", scales=[1, 1, 1.7, 0.5])
    assert_matches(model, feeds, atol=1)  # a rounding tie may land on either integer
    model, feeds = one_node_model(
        "Resize", {"x": IMAGE, "scales": np.array([1, 1, 2, 1.5], np.float32)}, ["y"], 10
    )
    assert_matches(model, feeds)


def test_resize_keeps_tvms_kernel_where_it_is_right(tmp_path: Path) -> None:
    """An integer upsample stays one fused resize2d kernel (the taps path is for the rest)."""
    from onnx import helper, numpy_helper

    from tvmflow.frontend import load_onnx, to_relax

    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
        "resize",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, IMAGE.shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, (1, 2, 14, 18))],
        [scales],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert "resize2d" in to_relax(load_onnx(tmp_path / "m.onnx", None)).script()


def test_resize_of_float64() -> None:
    """Weights in the input's float type (relax.const makes float64 data float32 unasked)."""
    model, feeds = _resize(IMAGE.astype(np.float64), mode="linear", scales=[1, 1, 0.6, 0.8])
    assert_matches(model, feeds, use_ort=False)  # onnxruntime has no float64 Resize


SPECIALS = np.array([[np.inf, -np.inf, 1.0], [np.nan, -2.0, np.inf]], np.float32)


@pytest.mark.parametrize(
    ("op", "inputs", "outputs", "opset", "attrs"),
    [
        ("IsInf", {"x": SPECIALS}, ["y"], 20, {"detect_positive": 0}),
        ("IsInf", {"x": SPECIALS}, ["y"], 20, {"detect_negative": 0}),
        ("EyeLike", {"x": np.zeros((3, 5), np.int32)}, ["y"], 22, {"dtype": 11, "k": 1}),
        (
            "OneHot",
            {
                "indices": np.array([[0, -1, 3], [2, 1, -4]], np.int64),
                "depth": np.array(4, np.int64),
                "values": np.array([-2.0, 5.0], np.float32),
            },
            ["y"],
            11,
            {"axis": 1},
        ),
        ("ReduceMax", {"x": SPECIALS > 0}, ["y"], 20, {}),
        ("ReduceMin", {"x": SPECIALS > 0}, ["y"], 20, {"keepdims": 0}),
        ("ReduceMax", {"x": np.zeros((2, 0, 3), np.float32)}, ["y"], 13, {"axes": [1]}),
        (
            "ReduceMin",
            {"x": np.zeros((2, 0, 3), np.int32)},
            ["y"],
            13,
            {"axes": [1], "keepdims": 0},
        ),
        ("Split", {"x": X}, ["a", "b", "c"], 11, {"axis": 2, "split": [2, 0, 3]}),
        ("Trilu", {"x": np.zeros((3, 0, 5), np.float32)}, ["y"], 14, {}),
    ],
    ids=[
        "isinf-negative",
        "isinf-positive",
        "eyelike-dtype",
        "onehot-runtime-values",
        "reducemax-bool",
        "reducemin-bool",
        "reducemax-empty",
        "reducemin-empty-int",
        "split-zero-part",
        "empty-constant",
    ],
)
def test_converter_fix_matches_onnxruntime(
    op: str, inputs: dict, outputs: list[str], opset: int, attrs: dict
) -> None:
    model, feeds = one_node_model(op, inputs, outputs, opset, **attrs)
    assert_matches(model, feeds)


def test_batch_normalization_training_mode() -> None:
    """training_mode=1: batch statistics, and the running ones updated (ONNX's reference:
    onnxruntime's CPU provider implements inference mode only)."""
    c = 3
    inputs = {
        "x": RNG.standard_normal((2, c, 4, 5)).astype(np.float32),
        "scale": RNG.uniform(0.5, 1.5, c).astype(np.float32),
        "bias": RNG.standard_normal(c).astype(np.float32),
        "mean": RNG.standard_normal(c).astype(np.float32),
        "var": RNG.uniform(0.5, 1.5, c).astype(np.float32),
    }
    model, feeds = one_node_model(
        "BatchNormalization",
        inputs,
        ["y", "mean_out", "var_out"],
        15,
        training_mode=1,
        epsilon=1e-3,
    )
    assert_matches(model, feeds, use_ort=False)


def test_rules_leave_kernels_with_undeclared_writes_alone() -> None:
    """TVM's NMS kernel overwrites, in a block declaring no writes, the scores a gather block
    produced; the Fallback and Elementwise rules inlined that gather (the kernel check then
    caught the result failing to build). Such kernels are now left to the reference."""
    from tvm import relax

    from tests.kernels import TARGET, fused_kernels
    from tvmflow.schedules.cpu_common import hides_writes
    from tvmflow.schedules.cpu_elementwise import Elementwise
    from tvmflow.schedules.cpu_fallback import Fallback

    def nms(boxes: relax.Expr, scores: relax.Expr) -> relax.Expr:
        out = relax.op.vision.all_class_non_max_suppression(
            boxes,
            scores,
            relax.const(2, "int64"),
            relax.const(0.5, "float32"),
            relax.const(0.0, "float32"),
            output_format="onnx",
        )
        return relax.TupleGetItem(out, 0)

    kernels = fused_kernels(
        {"boxes": ((1, 6, 4), "float32"), "scores": ((1, 2, 6), "float32")}, nms
    )
    nms_kernel = next(f for name, f in kernels.items() if "non_max_suppression" in name)
    assert hides_writes(nms_kernel)
    assert Fallback().apply(nms_kernel, TARGET, False) is None
    assert Elementwise().apply(nms_kernel, TARGET, False) is None
    gather = fused_kernels(
        {"x": ((4, 6), "float32")}, lambda x: relax.op.take(x, relax.const([2, 0]), 0)
    )
    assert not any(hides_writes(f) for f in gather.values())


def test_max_unpool_into_a_larger_output_shape() -> None:
    """Indices address the shape the pooling inverts; output_shape only pads it (ONNX's
    reference: onnxruntime's CPU provider scatters into output_shape, like TVM did)."""
    from onnx import helper, numpy_helper

    from tvmflow.backend import TvmflowBackend

    graph = helper.make_graph(
        [
            helper.make_node(
                "MaxUnpool", ["x", "i", "shape"], ["y"], kernel_shape=[2, 2], strides=[2, 2]
            )
        ],
        "unpool",
        [
            helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, (1, 2, 2, 2)),
            helper.make_tensor_value_info("i", onnx.TensorProto.INT64, (1, 2, 2, 2)),
        ],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, (1, 2, 5, 6))],
        [numpy_helper.from_array(np.array([1, 2, 5, 6], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    x = RNG.standard_normal((1, 2, 2, 2)).astype(np.float32)
    i = np.array([[[[0, 3], [9, 14]]], [[[16 + 1, 16 + 2], [16 + 8, 16 + 15]]]]).reshape(1, 2, 2, 2)
    feeds: dict[str, np.ndarray] = {"x": x, "i": i.astype(np.int64)}
    want = reference_outputs(model, feeds, use_ort=False)[0]
    got = TvmflowBackend.run_model(model, feeds)[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "attrs",
    some_slow(
        [
            {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
            {"kernel_shape": [2, 3], "dilations": [2, 1], "storage_order": 1},
            {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
            {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
        ],
        ids=["pads", "dilated-column-major", "same-upper", "ceil"],
        fast={"pads", "ceil"},
    ),
)
def test_max_pool_indices_match_onnxruntime(attrs: dict) -> None:
    x = RNG.standard_normal((2, 3, 7, 9)).astype(np.float32)
    model, feeds = one_node_model("MaxPool", {"x": x}, ["y", "indices"], 12, **attrs)
    assert_matches(model, feeds)


@pytest.mark.parametrize("dtype", [np.uint64, np.uint32])
def test_top_k_of_unsigned_integers(dtype: type) -> None:
    """TVM's sort refuses uint64; the key keeps the order above 2**63 too (ONNX's reference:
    onnxruntime has no uint64 TopK)."""
    high = np.iinfo(dtype).max
    x: np.ndarray = np.array([[3, high, 0, high - 5, 1 << 31, 7]], dtype)
    model, feeds = one_node_model("TopK", {"x": x, "k": np.array([4], np.int64)}, ["v", "i"], 11)
    assert_matches(model, feeds, use_ort=False)


def test_loop_trip_count_from_a_small_input_is_baked() -> None:
    """A Loop whose trip count is computed from a graph input (Range's function expansion):
    the backend bakes such small control inputs, so the loop unrolls."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "x"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [3]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["n", "one"], ["trips"]),
            helper.make_node("Loop", ["trips", "", "v0"], ["v"], body=body),
        ],
        "loop",
        [
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
            helper.make_tensor_value_info("v0", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, [3])],
        [helper.make_tensor(name="one", data_type=TensorProto.INT64, dims=[], vals=[1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    feeds: dict[str, np.ndarray] = {"n": np.array(3, np.int64), "v0": X[0, 0, :3], "x": X[1, 1, :3]}
    assert_matches(model, feeds)


def _candidates_model() -> onnx.ModelProto:
    """torchvision's detector tail in small: per-score candidates by NonZero, k = min(5,
    candidates) by ReduceMin over their Shape, TopK with that k, then NMS of the boxes kept."""
    from onnx import TensorProto, helper

    def const(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(value))

    i64 = np.int64
    nodes = [
        const("thr", np.array(0.3, np.float32)),
        const("flat", np.array([-1], i64)),
        const("five", np.array([5], i64)),
        const("one", np.array([1], i64)),
        const("zero", np.array([0], i64)),
        const("zero_one", np.array([0, 1], i64)),
        const("max_out", np.array([3], i64)),
        const("iou", np.array([0.5], np.float32)),
        helper.make_node("Reshape", ["scores", "flat"], ["s"]),
        helper.make_node("Greater", ["s", "thr"], ["mask"]),
        helper.make_node("NonZero", ["mask"], ["nz"]),
        helper.make_node("Reshape", ["nz", "flat"], ["idx"]),
        helper.make_node("Gather", ["s", "idx"], ["cand"]),
        helper.make_node("Shape", ["cand"], ["count"]),
        helper.make_node("Concat", ["count", "five"], ["both"], axis=0),
        helper.make_node("ReduceMin", ["both"], ["k0"], keepdims=0),
        helper.make_node("Reshape", ["k0", "one"], ["k"]),
        helper.make_node("TopK", ["cand", "k"], ["vals", "pos"]),
        helper.make_node("Gather", ["idx", "pos"], ["keep"]),
        helper.make_node("Gather", ["boxes", "keep"], ["kept"]),
        helper.make_node("Unsqueeze", ["kept", "zero"], ["b"]),
        helper.make_node("Unsqueeze", ["vals", "zero_one"], ["sc"]),
        helper.make_node("NonMaxSuppression", ["b", "sc", "max_out", "iou"], ["sel"]),
    ]
    graph = helper.make_graph(
        nodes,
        "candidates",
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [8, 4]),
        ],
        [
            helper.make_tensor_value_info("vals", TensorProto.FLOAT, ["k"]),
            helper.make_tensor_value_info("keep", TensorProto.INT64, ["k"]),
            helper.make_tensor_value_info("sel", TensorProto.INT64, ["selected", 3]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_run_time_k_from_shape_arithmetic_matches_onnxruntime() -> None:
    """TVM refused ReduceMin over a Shape ("cannot handle ShapeExpr inputs") and a TopK k
    known only at run time; NMS of boxes counted at run time crashed its type inference. One
    artifact serves every candidate count, none included."""
    from tvmflow.backend import TvmflowBackend

    model = _candidates_model()
    corners = RNG.uniform(0, 0.6, (8, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + 0.4], axis=1)
    rep = TvmflowBackend.prepare(model)
    for scores in (
        RNG.uniform(0.35, 1, (1, 8)),  # 8 candidates: k = 5
        np.array([[0.9, 0.1, 0.2, 0.8, 0.0, 0.1, 0.2, 0.25]]),  # 2 candidates: k = 2
        np.zeros((1, 8)),  # none
    ):
        feeds = {"scores": scores.astype(np.float32), "boxes": boxes}
        want = reference_outputs(model, feeds)
        got = rep.run([feeds["scores"], boxes])
        for name, a, b in zip(("vals", "keep", "sel"), got, want, strict=True):
            assert a.shape == b.shape, name
            np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("k", [0, 3])
def test_top_k_at_opset_10_reads_k_from_its_input(k: int) -> None:
    """TVM converted opset 10's TopK with its opset-1 rule (attribute k, absent: 1)."""
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    model, feeds = one_node_model("TopK", {"x": x, "k": np.array([k], np.int64)}, ["v", "i"], 10)
    assert_matches(model, feeds)


def test_counts_after_an_if_reach_reduce_min() -> None:
    """An If, then arithmetic on a data-dependent count (ReduceMin over NonZero's Shape and a
    constant, as detectors take min(k, candidates)): TVM's importer swaps its value table
    for a plain copy when it leaves a branch, which the conversion of such values must
    survive; each branch's count comes out as onnxruntime's."""
    from onnx import TensorProto, helper

    def branch(name: str, op: str) -> onnx.GraphProto:
        node = helper.make_node(op, ["x", "two"], [f"{name}_y"])
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [8])
        return helper.make_graph([node], name, [], [out])

    nodes = [
        helper.make_node(
            "If",
            ["flag"],
            ["y"],
            then_branch=branch("then", "Mul"),
            else_branch=branch("else", "Sub"),
        ),
        helper.make_node("Greater", ["y", "zero"], ["mask"]),
        helper.make_node("NonZero", ["mask"], ["nz"]),
        helper.make_node("Shape", ["nz"], ["count"]),
        helper.make_node("Concat", ["count", "five"], ["both"], axis=0),
        helper.make_node("ReduceMin", ["both"], ["k"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "after_if",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [8]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("k", TensorProto.INT64, [])],
        [
            onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two"),
            onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            onnx.numpy_helper.from_array(np.array([5], np.int64), "five"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([3, -1, 2.5, 0.5, 4, -3, 1, 2], np.float32)
    for flag in (True, False):
        assert_matches(model, {"x": x, "flag": np.array(flag)})


NON_ZERO_PROBE = """
import sys, json
import numpy as np
import tvmflow
x = np.array([[0, 1.5, 0], [np.nan, 0, -2]], np.float32)
out = tvmflow.load(sys.argv[1]).run({"x": x})["y"]
print(json.dumps({"y": out.tolist(), "tvm": "tvm" in sys.modules}))
"""


def test_non_zero_artifact_runs_on_tvms_runtime_alone(tmp_path: Path) -> None:
    """TVM ran NonZero as `relax.run.nonzero`, which only its compiler library has: the
    artifact compiled and verified, then failed to load where only the runtime is. tvmflow's
    kernel runs there (NaN counts as nonzero, as in numpy)."""
    import json
    import subprocess
    import sys

    from tvmflow.cli import main

    model, _ = one_node_model("NonZero", {"x": np.zeros((2, 3), np.float32)}, ["y"], 13)
    path = tmp_path / "nonzero.onnx"
    onnx.save(model, path)
    assert main(["compile", str(path), "-t", "x86", "-o", str(tmp_path / "art")]) == 0
    proc = subprocess.run(
        [sys.executable, "-c", NON_ZERO_PROBE, str(tmp_path / "art")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not info["tvm"]
    want = np.stack(np.nonzero(np.array([[0, 1.5, 0], [np.nan, 0, -2]], np.float32)))
    np.testing.assert_array_equal(np.array(info["y"]), want)


def test_ranked_outputs_are_compared_as_sets_of_rows(tmp_path: Path) -> None:
    """Outputs after a TopK compare as row sets where tied scores swapped two rows (any two
    correct engines may); a wrong row still fails, and outputs before it stay ordered."""
    from onnx import TensorProto, helper

    from tvmflow.accuracy import compare, ranked_outputs

    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("TopK", ["r", "k"], ["vals", "idx"], axis=0),
            helper.make_node("Gather", ["boxes", "idx"], ["picked"], axis=0),
        ],
        "ranked",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [4, 2]),
        ],
        [
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("picked", TensorProto.FLOAT, [3, 2]),
        ],
        [onnx.numpy_helper.from_array(np.array([3], np.int64), "k")],
    )
    path = tmp_path / "ranked.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    ranked = ranked_outputs(path)
    assert ranked == {"picked"}
    want = {"r": np.array([1.0, 2.0, 3.0, 4.0]), "picked": np.array([[1.0, 2], [3, 4], [5, 6]])}
    swapped = {"r": want["r"], "picked": want["picked"][[0, 2, 1]]}
    (r, picked) = compare(swapped, want, ranked=ranked)
    assert picked.max_abs_err == 0 and picked.rows_as_set and not r.rows_as_set
    wrong = {"r": want["r"], "picked": np.array([[1.0, 2], [5, 6], [3, 5]])}
    assert compare(wrong, want, ranked=ranked)[1].max_abs_err == 1
    (r_swapped, _) = compare({"r": want["r"][::-1], "picked": want["picked"]}, want, ranked=ranked)
    assert r_swapped.max_abs_err == 3  # not after a TopK: order counts


def test_non_max_suppression_of_offset_classes_matches_onnxruntime() -> None:
    """torchvision's batched NMS: each class's boxes shifted apart along x, one NMS over all
    of them (the kernel files kept boxes in strips of the x range and compares a candidate
    only with those it can reach); wide and thin boxes, near-duplicates, every count kept."""
    from tvmflow.backend import TvmflowBackend

    rng = np.random.default_rng(11)
    classes, per_class = 24, 40
    corners = rng.uniform(0, 50, (classes, per_class, 2))
    sizes = rng.uniform(0.5, 30, (classes, per_class, 2))
    sizes[:, ::9, 0] = 49  # some boxes span the class's whole width
    boxes = np.concatenate([corners, corners + sizes], axis=-1)  # x1, y1, x2, y2
    boxes[:, 1::5] = boxes[:, ::5] + rng.normal(0, 0.5, boxes[:, ::5].shape)  # near-duplicates
    boxes[..., [0, 2]] += 81.0 * np.arange(classes)[:, None, None]  # the per-class offset
    boxes = boxes.reshape(1, -1, 4)[..., [1, 0, 3, 2]].astype(np.float32)  # ONNX: y, x order
    scores = rng.uniform(0, 1, (1, 1, classes * per_class)).astype(np.float32)
    model, feeds = one_node_model(
        "NonMaxSuppression",
        {
            "boxes": boxes,
            "scores": scores,
            "max_out": np.array([10_000], np.int64),
            "iou": np.array([0.3], np.float32),
        },
        ["y"],
        11,
    )
    want = reference_outputs(model, feeds)[0]
    got = TvmflowBackend.run_model(model, feeds)[0]
    assert len(want) > classes  # most classes keep several boxes
    np.testing.assert_array_equal(got, want)
