"""scripts/profile-kernels and tvmflow.kernel_profile: side-by-side timing + kernel breakdown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, ZOO_SHAPES
from tvmflow.compile import Artifact
from tvmflow.frontend import load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.kernel_profile import (
    KernelTime,
    format_profile,
    kernel_flops,
    profile_artifact,
    time_side_by_side,
)
from tvmflow.lowering import LoweringOptions, lower
from tvmflow.targets import resolve_preset


def test_profile_breaks_time_down_by_kernel(artifacts: dict[str, Artifact], zoo_dir: Path):
    model = load_onnx(zoo_dir / "resnet_block.onnx", ZOO_SHAPES["resnet_block"])
    flops = kernel_flops(lower(model, resolve_preset("x86"), LoweringOptions()).mod)
    profile = profile_artifact(
        artifacts["resnet_block"].directory,
        model.path,
        random_inputs(model.inputs),
        flops,
        threads=1,
        rounds=1,
        per_round=3,
    )
    assert profile.times.tvmflow_p50 > 0 and profile.times.onnxruntime_p50 > 0
    convs = [k for k in profile.kernels if "conv2d" in k.name]
    assert convs and all(k.seconds > 0 and k.calls >= 1 for k in convs)
    assert all(k.gflops_per_s is not None and k.gflops_per_s > 0 for k in convs)
    text = format_profile(profile)
    assert "ratio" in text and convs[0].name in text


def test_gflops_only_for_compute_kernels():
    assert KernelTime("fused_matmul_add", 1, 0.5, 1e9).gflops_per_s == 2.0
    assert KernelTime("softmax", 1, 0.5, 1e9).gflops_per_s is None


def test_side_by_side_rounds_interleave():
    order: list[str] = []
    times = time_side_by_side(
        lambda: order.append("t"), lambda: order.append("o"), rounds=2, per_round=2
    )
    assert order == ["t", "o", "t", "t", "o", "o", "t", "t", "o", "o"]
    assert times.samples == 4
    assert times.tvmflow_cpu_p50 >= 0 and times.onnxruntime_cpu_p50 >= 0


def test_script_runs_on_a_zoo_model():
    proc = subprocess.run(
        [str(ROOT / "scripts" / "profile-kernels"), "mlp", "--rounds", "1", "--per-round", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ratio" in proc.stdout and "matmul" in proc.stdout


def test_script_bad_model_is_one_line_exit_2(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "profile_kernels.py"), str(tmp_path / "no.onnx")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no.onnx" in proc.stderr
