"""tvmflow.lowering: the one sequence tune and compile share, and the one precision check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

import tvmflow
from tvmflow.accuracy import onnxruntime_outputs
from tvmflow.cli import main
from tvmflow.frontend import load_onnx
from tvmflow.lowering import LoweringOptions, fused_module, kernel_names, lower, tuning_tasks
from tvmflow.targets import resolve_preset
from tvmflow.tunelog import LogIdentity


def test_tune_extracts_exactly_the_kernels_compile_builds(zoo_dir: Path) -> None:
    model = load_onnx(zoo_dir / "conv_net.onnx", {"image": (2, 3, 32, 32)})
    preset = resolve_preset("x86")
    target = tvm.target.Target(preset.target)
    tasks = tuning_tasks(model, target, "fp32")
    built = lower(model, preset, LoweringOptions(use_shipped_logs=False))
    assert [t.name for t in tasks] == kernel_names(fused_module(model, target, "fp32"))
    assert len(tasks) == built.tuning.tasks_total and built.tuning.tasks_tuned == 0
    scheduled = [f for _, f in built.mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert scheduled and all(f.attrs and f.attrs.get("tirx.is_scheduled") for f in scheduled)


@pytest.mark.parametrize("command", ["compile", "tune"])
def test_precision_is_checked_once_for_compile_and_tune(
    zoo_dir: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["-o", str(tmp_path / "out")] if command == "compile" else ["--log", str(tmp_path)]
    argv = [command, str(zoo_dir / "mlp.onnx"), "-t", "x86", *where, "--input-shape", "x=4,64"]
    assert main([*argv, "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "--precision fp16 is for CUDA targets" in err and "use --precision fp32" in err
    assert not (tmp_path / "out").exists()


def test_log_identity_keeps_precision_and_reads_old_logs_as_fp32() -> None:
    ident = LogIdentity("ab" * 32, (), "cuda-sm80", {"kind": "cuda"}, "fp16")
    assert LogIdentity.from_json(ident.to_json()) == ident
    old = {k: v for k, v in ident.to_json().items() if k != "precision"}
    assert LogIdentity.from_json(old).precision == "fp32"


def gated_model(path: Path) -> Path:
    """y = relu(h) if flag else -h, h = tanh(x * w + b) * 2: an If on a run-time input, so
    the imported function has control flow and no dataflow block of its own."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((1, 64)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal((1, 64)).astype(np.float32), "b")
    two = numpy_helper.from_array(np.full((1, 64), 2.0, np.float32), "two")

    def branch(op: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(op, TensorProto.FLOAT, [1, 64])
        return helper.make_graph([helper.make_node(op, ["h"], [op])], op, [], [out])

    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["t"]),
            helper.make_node("Mul", ["t", "two"], ["h"]),
            helper.make_node(
                "If", ["flag"], ["y"], then_branch=branch("Relu"), else_branch=branch("Neg")
            ),
        ],
        "gated",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [w, b, two],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_ops_around_control_flow_are_fused(tmp_path: Path) -> None:
    """FuseOps fuses only inside dataflow blocks: the elementwise chain before the If is one
    kernel (one VM call), not one per op, and both branches still give onnxruntime's numbers."""
    path = gated_model(tmp_path / "gated.onnx")
    target = tvm.target.Target(resolve_preset("x86").target)
    names = kernel_names(fused_module(load_onnx(path), target, "fp32"))
    assert any(n.startswith("fused_") and "tanh" in n and "add" in n for n in names), names
    assert not any(n in ("add", "multiply") or n.startswith("fast_tanh") for n in names), names
    assert main(["compile", str(path), "-t", "x86", "-o", str(tmp_path / "art")]) == 0
    model = tvmflow.load(tmp_path / "art")
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        expected = onnxruntime_outputs(path, feeds)["y"]
        np.testing.assert_allclose(model.run(feeds)["y"], expected, rtol=1e-5, atol=1e-5)
