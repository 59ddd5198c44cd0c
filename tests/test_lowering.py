"""tvmflow.lowering: the one sequence tune and compile share, and the one precision check."""

from __future__ import annotations

from pathlib import Path

import pytest
import tvm

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
