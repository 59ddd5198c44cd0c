"""tvmflow.levers: op classes of tvmflow's kernels and of the peers' nodes on generated models,
the attribution arithmetic, and one measured standing of a compiled model (no timing asserts:
only that the parts add up as defined)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ZOO_SHAPES
from tvmflow import levers
from tvmflow.compile import Artifact
from tvmflow.frontend import load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.levers import (
    ATTENTION,
    CONV_1X1,
    CONV_3X3,
    CONV_OTHER,
    DEPTHWISE,
    GROUPED,
    MATMUL,
    MOVE,
    NORM,
    OVERHEAD,
    POOL,
    RECURRENT,
    EngineBreakdown,
    OpTime,
)
from tvmflow.lowering import BF16_FEATURE, BF16_PRESET, LoweringOptions, fused_module, lower
from tvmflow.targets import host_cpu_features, resolve_preset

MOBILENET = {"image": (1, 3, 224, 224)}
ENCODER = {"hidden_in": (1, 128, 256)}


def _fused(zoo_dir: Path, name: str, shapes: Mapping[str, tuple[int, ...]]) -> Any:
    import tvm

    model = load_onnx(zoo_dir / f"{name}.onnx", shapes)
    return fused_module(model, tvm.target.Target(resolve_preset("x86").target), "fp32")


def test_conv_classes_from_the_kernel_window_and_groups():
    assert levers.conv_class([1, 1], 64, 1) == CONV_1X1
    assert levers.conv_class([3, 3], 64, 1) == CONV_3X3
    assert levers.conv_class([1, 3], 64, 1) == CONV_OTHER  # a conv1d as a height-1 conv2d
    assert levers.conv_class([7, 7], 3, 1) == CONV_OTHER
    assert levers.conv_class([3, 3], 1, 32) == DEPTHWISE
    assert levers.conv_class([3, 3], 8, 4) == GROUPED


def test_peer_node_classes_from_op_type_and_shapes():
    qconv = [[1, 32, 8, 8], [], [], [32, 1, 3, 3], [], []]  # QLinearConv's weight is input 3
    assert levers.ort_node_class("QLinearConv", qconv) == DEPTHWISE
    assert levers.ort_node_class("FusedConv", [[1, 16, 8, 8], [32, 16, 1, 1]]) == CONV_1X1
    assert levers.ort_node_class("MatMul", [[1, 4, 8, 16], [1, 4, 16, 8]]) == ATTENTION
    assert levers.ort_node_class("MatMul", [[1, 8, 16], [16, 32]]) == MATMUL
    assert levers.ort_node_class("LSTM", [[5, 1, 8]]) == RECURRENT
    upsample = [[1, 16, 8, 8], [16, 8, 2, 2]]  # kernel 2 = stride 2: a 1x1 conv + shuffle
    assert levers.ort_node_class("ConvTranspose", upsample, [[1, 8, 16, 16]]) == CONV_1X1
    assert levers.ort_node_class("ConvTranspose", upsample, [[1, 8, 17, 17]]) == CONV_OTHER
    deconv = [[1, 16, 8, 8], [16, 8, 4, 4]]
    assert levers.ov_node_class("Deconvolution", deconv, [], [[1, 8, 16, 16]]) == CONV_OTHER
    assert levers.ov_node_class("Convolution", [[1, 8, 4, 4], [8, 1, 1, 3, 3]], []) == DEPTHWISE
    assert levers.ov_node_class("Convolution", [[1, 8, 4, 4], [16, 8, 3, 3]], []) == CONV_3X3
    matmul = [[1, 4, 8, 16], [1, 4, 16, 8]]
    assert levers.ov_node_class("MatMul", matmul, ["Reshape", "Transpose"]) == ATTENTION
    assert levers.ov_node_class("MatMul", [[1, 8, 16], [16, 32]], ["Add", "Const"]) == MATMUL


def test_mobilenet_kernels_and_onnxruntime_nodes_fall_in_the_same_classes(zoo_dir: Path, tmp_path):
    classes = levers.kernel_classes(_fused(zoo_dir, "mobilenet_v2", MOBILENET))
    mine = set(classes.values())
    assert {CONV_1X1, CONV_3X3, DEPTHWISE, MATMUL} <= mine
    model = load_onnx(zoo_dir / "mobilenet_v2.onnx", MOBILENET)
    ort = levers.ort_profile(model.path, random_inputs(model.inputs), 1, 2, tmp_path)
    theirs = {o.op_class for o in ort.ops}
    assert {CONV_1X1, CONV_3X3, DEPTHWISE, MATMUL} <= theirs
    # 17 depthwise convs in the graph, on both sides
    assert sum(c == DEPTHWISE for c in classes.values()) >= 1
    assert sum(o.op_class == DEPTHWISE for o in ort.ops) == 17
    assert all(0 < c <= 1 for c in ort.covered)


def test_openvino_nodes_fall_in_the_same_classes(zoo_dir: Path):
    pytest.importorskip("openvino")
    model = load_onnx(zoo_dir / "mobilenet_v2.onnx", MOBILENET)
    ov = levers.ov_profile(model.path, MOBILENET, random_inputs(model.inputs), 1, 2)
    theirs = [o.op_class for o in ov.ops]
    assert {CONV_1X1, CONV_3X3, DEPTHWISE, MATMUL} <= set(theirs)
    assert theirs.count(DEPTHWISE) == 17


def test_encoder_attention_is_told_apart_from_weight_matmuls(zoo_dir: Path, tmp_path):
    classes = set(levers.kernel_classes(_fused(zoo_dir, "encoder", ENCODER)).values())
    assert {MATMUL, ATTENTION, NORM} <= classes
    model = load_onnx(zoo_dir / "encoder.onnx", ENCODER)
    ort = levers.ort_profile(model.path, random_inputs(model.inputs), 1, 2, tmp_path)
    assert {MATMUL, ATTENTION} <= {o.op_class for o in ort.ops}


@pytest.fixture(scope="module")
def resnet_block_lowered(zoo_dir: Path) -> tuple[Any, Any]:
    """resnet_block's fused (unscheduled) and lowered (scheduled) modules."""
    model = load_onnx(zoo_dir / "resnet_block.onnx", ZOO_SHAPES["resnet_block"])
    lowered = lower(model, resolve_preset("x86"), LoweringOptions()).mod
    return _fused(zoo_dir, "resnet_block", ZOO_SHAPES["resnet_block"]), lowered


def test_lowered_kernels_get_the_class_of_their_unscheduled_kernel(resnet_block_lowered):
    """Scheduling renames kernels and drops unit reduction extents; pairing by call order
    keeps each kernel's class (a 1x1 conv's scheduled form alone looks like a conv1d)."""
    fused, lowered = resnet_block_lowered
    classes = levers.lowered_classes(fused, lowered)
    called = levers.call_order(lowered)
    assert called and set(called) <= set(classes)
    assert [classes[n] for n in called] == [
        levers.kernel_classes(fused)[n] for n in levers.call_order(fused)
    ]
    assert CONV_3X3 in {classes[n] for n in called}


def test_onnxruntime_events_give_medians_per_node_and_the_covered_share():
    def run(ts: int, dur: int) -> dict:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(name: str, op: str, ts: int, dur: int, shapes: list) -> dict:
        args = {"op_name": op, "node_index": name, "input_type_shape": shapes}
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": args}

    conv = [{"float": [1, 8, 16, 16]}, {"float": [8, 1, 3, 3]}]
    events = [run(0, 100), node("a", "Conv", 1, 60, conv), node("b", "Transpose", 70, 20, [])]
    events += [run(200, 100), node("a", "Conv", 201, 40, conv)]  # b did not run (an If)
    profile = levers.ort_op_times(events)
    ops = {o.name.split("#")[0]: o for o in profile.ops}
    assert ops["a"].op_class == DEPTHWISE and ops["a"].seconds == pytest.approx(40e-6)
    assert ops["b"].op_class == MOVE and ops["b"].seconds == 0.0
    assert profile.covered == pytest.approx((0.8, 0.4))
    # a prepacked int8 weight's shape is left out: the graph's node (named as a prefix) has it
    qconv = node("l1.conv_token_7", "QLinearConv", 1, 10, [{"uint8": [1, 8, 8, 16]}])
    qconv["args"]["output_type_shape"] = [{"uint8": [1, 8, 8, 16]}]
    graph = {"l1.conv": ([16, 1, 3, 3], 16), "l1": ([16, 16, 1, 1], 1)}
    (found,) = levers.ort_op_times([run(0, 100), qconv], weights=graph).ops
    assert found.op_class == DEPTHWISE and found.op == "QLinearConv"
    sized = levers.OpProfile(profile.ops, profile.covered).at(1e-3)
    assert sum(o.seconds for o in sized) == pytest.approx(1e-3 * 0.6)  # median covered share


def _engine(name: str, p50: float, **classes: float) -> EngineBreakdown:
    ops = tuple(OpTime(c, c, c.replace("_", " "), s) for c, s in classes.items())
    return EngineBreakdown(name, p50, ops)


def test_the_next_lever_is_the_largest_gap_to_the_best_peer():
    mine = _engine("tvmflow", 10.0, matmul=4.0, elementwise=3.0, normalization=1.0)
    ort = _engine("onnxruntime", 8.0, matmul=3.0, elementwise=1.0, normalization=2.0)
    ov = _engine("openvino", 9.0, matmul=1.0, elementwise=1.0, normalization=1.0)
    s = levers.standing("m", mine, [ort, ov])
    assert s.best.engine == "onnxruntime" and s.ratio == pytest.approx(1.25)
    assert s.table[OVERHEAD] == pytest.approx({"tvmflow": 2.0, "onnxruntime": 2.0, "openvino": 6.0})
    assert [lv.op_class for lv in s.levers] == ["elementwise", "matmul"]
    assert s.levers[0].gap == pytest.approx(2.0)
    assert s.levers[0].ratio_after == pytest.approx((10.0 - 2.0) / 8.0)
    assert "lever elementwise" in levers.format_standing(s)


def test_a_peer_node_spanning_classes_merges_them_for_every_engine():
    mine = _engine("tvmflow", 7.0, matmul=4.0, attention=2.0)
    fused = OpTime("attn", "Attention", ATTENTION, 3.0, (MATMUL, ATTENTION))
    ort = EngineBreakdown("onnxruntime", 5.0, (fused, OpTime("ffn", "MatMul", MATMUL, 1.0)))
    s = levers.standing("m", mine, [ort])
    assert s.table["matmul+attention"] == pytest.approx({"tvmflow": 6.0, "onnxruntime": 4.0})
    assert s.levers[0].op_class == "matmul+attention"


def test_a_measured_standing_adds_up(
    artifacts: dict[str, Artifact], zoo_dir: Path, resnet_block_lowered, tmp_path
):
    model = load_onnx(zoo_dir / "resnet_block.onnx", ZOO_SHAPES["resnet_block"])
    classes = levers.lowered_classes(*resnet_block_lowered)
    options = levers.MeasureOptions(threads=1, rounds=1, per_round=3, profile_runs=3)
    s, _ = levers.measure(
        "resnet_block", artifacts["resnet_block"].directory, model.path, classes, options, tmp_path
    )
    engines = [s.tvmflow, *s.peers]
    assert {e.engine for e in engines} >= {"tvmflow", "onnxruntime"}
    for e in engines:  # every engine's classes, overhead included, sum to its p50
        total = sum(row[e.engine] for row in s.table.values())
        assert total == pytest.approx(e.p50)
    assert {o.op_class for o in s.tvmflow.ops} >= {CONV_3X3, POOL}
    # tvmflow's kernels are sized by their share of unprofiled runs taken between the profiled
    # ones: nearly all of a call (the VM's own time is a few %), whatever the load did since
    # the p50's rounds
    assert 0.7 < s.tvmflow.coverage < 1.3, s.tvmflow.coverage
    assert all(a.gap >= b.gap > 0 for a, b in zip(s.levers, s.levers[1:], strict=False))


def _script() -> Any:
    """scripts/levers.py as a module."""
    import importlib.util
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "levers.py"
    spec = importlib.util.spec_from_file_location("levers_script", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_script_rows_and_table(tmp_path):
    """scripts/levers: a standing becomes a JSON row and a table line with its levers."""
    module = _script()
    mine = _engine("tvmflow", 0.010, matmul=0.004, elementwise=0.003)
    ort = _engine("onnxruntime", 0.008, matmul=0.003, elementwise=0.001)
    row = module.row_of(levers.standing("m", mine, [ort]), {"openvino": "cannot read it"})
    assert row["ratio"] == pytest.approx(1.25) and row["best_peer"] == "onnxruntime"
    assert [lv["class"] for lv in row["levers"]] == ["elementwise", "matmul"]
    assert row["ratio_after_two"] == pytest.approx((10 - 2 - 1) / 8)
    text = module.to_markdown({"m": row | {"kind": "corpus", "num_cores": 1}})
    assert "| m | " in text and "**elementwise** (−2 ms" in text
    assert "1 of 1 rows are behind their best peer" in text


@pytest.mark.skipif(BF16_FEATURE not in host_cpu_features(), reason="this host has no AVX512_BF16")
def test_a_bf16_standing_is_against_openvino_default(zoo_dir: Path, tmp_path: Path) -> None:
    """`--precision bf16`: the artifact is built bf16 for the bf16 preset, its bf16 kernels
    keep their conv classes, and the OpenVINO peer is OpenVINO's default precision (bf16
    here), written to its own table."""
    import tvm

    from tvmflow.compile import CompileOptions, compile_model

    shapes = ZOO_SHAPES["resnet_block"]
    model = load_onnx(zoo_dir / "resnet_block.onnx", shapes)
    preset = resolve_preset(BF16_PRESET).for_threads(1)
    target = tvm.target.Target(preset.target)
    classes: dict[str, str] = {}
    compile_model(
        model,
        preset,
        tmp_path / "art",
        CompileOptions(verify=False, precision="bf16"),
        on_lowered=lambda low: classes.update(
            levers.lowered_classes(fused_module(model, target, "bf16"), low.mod)
        ),
    )
    assert CONV_3X3 in classes.values()
    options = levers.MeasureOptions(1, 1, 3, 3, precision="bf16")
    s, missing = levers.measure(
        "resnet_block", tmp_path / "art", model.path, classes, options, tmp_path
    )
    peers = {p.engine for p in s.peers} | set(missing)
    assert peers == {"onnxruntime", "openvino-default"}
    assert {o.op_class for o in s.tvmflow.ops} >= {CONV_3X3, POOL}
    module = _script()
    setup = module.SETUPS["bf16"]
    assert setup.out_json.name == "levers-bf16.json" and setup.preset == BF16_PRESET
    row = module.row_of(s, missing) | {"kind": "reference", "num_cores": 1}
    text = module.to_markdown({"resnet_block": row}, setup)
    assert "--precision bf16" in text and "| resnet_block (ref) | " in text


def test_hand_written_kernels_are_classed_by_name() -> None:
    """tvmflow's NMS and NonZero kernels have no blocks to read a class from: they count as
    the peers' NMS (other) and NonZero (data movement) do."""
    import tvm

    from tvmflow.levers import MOVE, OTHER, kernel_classes
    from tvmflow.ops.non_max_suppression import nms_kernel
    from tvmflow.ops.non_zero import non_zero_kernel

    mod = tvm.IRModule(
        {"non_max_suppression1": nms_kernel(False, True), "non_zero": non_zero_kernel(2)}
    )
    assert kernel_classes(mod) == {"non_max_suppression1": OTHER, "non_zero": MOVE}
