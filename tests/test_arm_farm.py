"""The device-farm path end to end: `tvmflow tune --rpc-tracker` measuring ARM candidates on
an emulated aarch64 RPC server, and compile using the records (verified under qemu)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.emulation import ARM_PRESET, RpcTracker, require_cross_compiler
from tvmflow.cli import main
from tvmflow.tunelog import read_summary

pytestmark = pytest.mark.arm


def test_tune_arm_through_emulated_farm_then_compile(
    arm_rpc_tracker: RpcTracker, zoo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_cross_compiler()
    log = tmp_path / "log"
    model = str(zoo_dir / "mlp.onnx")
    tracker = f"{arm_rpc_tracker.host}:{arm_rpc_tracker.port}"
    rc = main(
        [
            "tune",
            model,
            "-t",
            ARM_PRESET,
            "--log",
            str(log),
            "--input-shape",
            "x=1,64",
            "--trials",
            "6",
            "--batch-size",
            "2",
            "--population",
            "16",
            "--rpc-tracker",
            tracker,
            "--rpc-key",
            arm_rpc_tracker.key,
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    summary = read_summary(log)
    assert summary is not None and summary["trials"] >= 2
    assert summary["target"]["mtriple"] == "aarch64-linux-gnu"
    assert tracker in json.dumps(summary["last_job"])  # measured on the farm, not here
    assert all(t["untuned_us"] and t["untuned_us"] > 0 for t in summary["tasks"])

    art = tmp_path / "art"
    rc = main(
        [
            "compile",
            model,
            "-t",
            ARM_PRESET,
            "-o",
            str(art),
            "--input-shape",
            "x=1,64",
            "--tuning-log",
            str(log),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["tuning"]["tasks_total"] == len(summary["tasks"])
    assert manifest["accuracy"] is not None  # checked under qemu against onnxruntime
    assert manifest["extra"]["verified_with"].startswith("emulated")
