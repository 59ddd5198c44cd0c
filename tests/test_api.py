"""The front door: tvmflow.compile / tvmflow.tune in one call, `import tvmflow` staying light,
and records applying by kernel workload across models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper
from tvm.s_tir import meta_schedule as ms

import tvmflow
from tests.conftest import ZOO_SHAPES
from tvmflow import zoo
from tvmflow.cli import main
from tvmflow.errors import TvmflowError
from tvmflow.frontend import load_onnx
from tvmflow.lowering import tuning_tasks
from tvmflow.targets import resolve_preset
from tvmflow.tunelog import RECORDS, WORKLOADS, read_summary

FRONT_DOOR_PROBE = """
import json, sys
import numpy as np
import tvmflow
stages = ("tvmflow.compile", "tvmflow.frontend", "tvmflow.lowering", "tvmflow.tune")
before = sorted(k for k in sys.modules if k.split(".")[0] in ("tvm", "onnx") or k in stages)
art = tvmflow.compile(sys.argv[1], "x86", output=sys.argv[2], input_shapes={"x": (4, 64)})
out = tvmflow.load(sys.argv[2]).run({"x": np.ones((4, 64), np.float32)})
print(json.dumps({
    "before": before,
    "verified": art.manifest.accuracy is not None,
    "library": art.library.is_file(),
    "logits": list(out["logits"].shape),
}))
"""


def test_import_is_light_until_a_compile_is_asked_for(zoo_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TVM_USE_RUNTIME_LIB"}
    proc = subprocess.run(
        [sys.executable, "-c", FRONT_DOOR_PROBE, str(zoo_dir / "mlp.onnx"), str(tmp_path / "a")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["before"] == []  # nothing of TVM, onnx or the compiling stages yet
    assert info["verified"] and info["library"] and info["logits"] == [4, 16]


def test_compile_front_door_mirrors_the_cli(zoo_dir: Path, tmp_path: Path) -> None:
    art = tvmflow.compile(
        zoo_dir / "conv_net.onnx",
        output=tmp_path / "a",
        input_shapes=ZOO_SHAPES["conv_net"],
        use_shipped_logs=False,
    )
    assert art.manifest.preset.startswith("x86") and art.manifest.accuracy is not None
    with pytest.raises(TvmflowError, match="--precision fp16 is for CUDA targets"):
        tvmflow.compile(
            zoo_dir / "mlp.onnx",
            output=tmp_path / "b",
            input_shapes={"x": (4, 64)},
            precision="fp16",
        )
    assert not (tmp_path / "b").exists()


def test_tune_front_door_writes_a_log_compile_and_logs_show_read(
    zoo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log"
    model = load_onnx(zoo_dir / "mlp.onnx", {"x": (4, 64)})
    target = tvm.target.Target(resolve_preset("x86").target)
    kernels = len(tuning_tasks(model, target, "fp32"))  # a budget the baselines alone meet
    result = tvmflow.tune(model, log=log, trials=kernels, seed=0)
    summary = read_summary(log)
    assert summary is not None and len(summary["tasks"]) == len(result.tasks) == kernels
    assert all(t.untuned_us and t.untuned_us > 0 for t in result.tasks)
    art = tvmflow.compile(model, output=tmp_path / "a", tuning_logs=[log])
    assert art.manifest.tuning.tasks_tuned == 0  # baselines only: nothing beats the default

    assert main(["logs", "show", str(log), "--json"]) == 0
    shown = {k["name"]: k for k in json.loads(capsys.readouterr().out)}
    assert set(shown) == {t.name for t in result.tasks}
    for t in result.tasks:
        assert shown[t.name]["trials"] == t.trials and shown[t.name]["weight"] == t.weight
        assert shown[t.name]["default_us"] == pytest.approx(t.untuned_us, rel=1e-3)
        assert shown[t.name]["speedup"] == pytest.approx(1.0)
    assert main(["logs", "show", str(log)]) == 0
    assert "whole model" in capsys.readouterr().out


def test_tune_front_door_takes_the_clis_farm_and_split(zoo_dir: Path, tmp_path: Path) -> None:
    """The CLI's --tasks and --rpc-* are tvmflow.tune arguments (the CLI only forwards them)."""
    log = tmp_path / "log"
    with pytest.raises(TvmflowError, match="--rpc-tracker and --rpc-key go together"):
        tvmflow.tune(zoo_dir / "mlp.onnx", log=log, input_shapes=ZOO_SHAPES["mlp"], rpc_key="pi")
    assert not log.exists()
    model = load_onnx(zoo_dir / "mlp.onnx", ZOO_SHAPES["mlp"])
    target = tvm.target.Target(resolve_preset("x86").target)
    names = sorted(t.name for t in tuning_tasks(model, target, "fp32"))
    result = tvmflow.tune(model, log=log, trials=1, tasks=(2, len(names)), seed=0)
    assert [t.name for t in result.tasks] == names[1:2]


def _two_layer(path: Path, second: int) -> Path:
    """x[4,64] → MatMul 64x128 + Add + Tanh (the mlp's first layer) → MatMul 128xN + Relu."""
    b = zoo._Builder(7)
    h = b.op("MatMul", ["x", b.weight("w1", (64, 128))], "h.mm")
    h = b.op("Tanh", [b.op("Add", [h, b.weight("b1", (128,), 0.1)], "h.add")], "h")
    y = b.op("Relu", [b.op("MatMul", [h, b.weight("w2", (128, second))], "y.mm")], "y")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])
    out = helper.make_tensor_value_info(y, TensorProto.FLOAT, [4, second])
    onnx.save(b.model("two_layer", [x], [out]), str(path))
    return path


def test_a_record_tuned_on_one_model_applies_to_another(zoo_dir: Path, tmp_path: Path) -> None:
    """Records are keyed by the kernel's workload (its structure), not by the model: a search
    result for the mlp's first layer serves a different model built on the same layer."""
    preset = resolve_preset("x86")
    target = tvm.target.Target(preset.target)
    tasks = tuning_tasks(load_onnx(zoo_dir / "mlp.onnx", {"x": (4, 64)}), target, "fp32")
    shared = next(t for t in tasks if "tanh" in t.name).workload
    log = tmp_path / "log"
    log.mkdir()
    db = ms.database.JSONDatabase(str(log / WORKLOADS), str(log / RECORDS))
    workload = db.commit_workload(shared)
    args = ms.arg_info.ArgInfo.from_prim_func(shared["main"])
    for trace, secs in _baseline_and_sampled(shared):
        db.commit_tuning_record(ms.database.TuningRecord(trace, workload, [secs], target, args))

    other = _two_layer(tmp_path / "other.onnx", second=32)
    art = tvmflow.compile(other, output=tmp_path / "a", tuning_logs=[log], use_shipped_logs=False)
    assert art.manifest.tuning.tasks_tuned == 1  # the shared layer, and only it
    assert art.manifest.accuracy is not None  # verified against onnxruntime with the record
    out = tvmflow.load(art.directory).run({"x": np.ones((4, 64), np.float32)})
    assert out["y"].shape == (4, 32)


def _baseline_and_sampled(kernel: tvm.IRModule) -> list[tuple[tvm.s_tir.Trace, float]]:
    """A deterministic trace (trial 0's form) and a faster one with a sampling decision."""
    fixed = tvm.s_tir.Schedule(kernel)
    fixed.parallel(fixed.get_loops(fixed.get_child_blocks(fixed.get_sblock("root"))[0])[0])
    sampled = tvm.s_tir.Schedule(kernel, seed=1)
    loops = sampled.get_loops(sampled.get_child_blocks(sampled.get_sblock("root"))[0])
    sampled.split(loops[-1], factors=sampled.sample_perfect_tile(loops[-1], n=2))
    assert fixed.trace is not None and sampled.trace is not None
    return [(fixed.trace, 2e-3), (sampled.trace, 1e-3)]
