"""Compile → artifact → production loader, end to end on generated models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tvmflow
from tvmflow.accuracy import Tolerance, compare, onnxruntime_outputs
from tvmflow.compile import Artifact, CompileOptions, compile_model
from tvmflow.errors import AccuracyError, TvmflowError
from tvmflow.frontend import load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.manifest import FORMAT_VERSION, sha256_file
from tvmflow.targets import resolve_preset
from tvmflow.tunelog import apply_records


def _copy(artifact: Artifact, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(artifact.directory, dest)
    return dest


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _shipped_digest(preset: str) -> str | None:
    """Compile consults the logs shipped for the preset: the manifest names them by digest."""
    from tvmflow.targets import resolve_preset
    from tvmflow.tunelog import logs_digest, shipped_log_dirs

    dirs = shipped_log_dirs(preset, resolve_preset(preset).target)
    return logs_digest(dirs) if dirs else None


def test_manifest_describes_the_build(artifacts: dict[str, Artifact], zoo_dir: Path) -> None:
    art = artifacts["mlp"]
    data = json.loads((art.directory / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert data["tvmflow_version"] == tvmflow.__version__ and data["tvm_version"].startswith("0.27")
    assert data["preset"] == resolve_preset("x86").name
    assert data["target"]["kind"] == "llvm" and data["target"]["num-cores"] >= 1
    assert data["inputs"] == [{"name": "x", "shape": [4, 64], "dtype": "float32"}]
    assert [o["name"] for o in data["outputs"]] == ["hidden", "logits"]
    assert data["outputs"][1]["shape"] == [4, 16]
    assert data["library_sha256"] == sha256_file(art.directory / "model.so")
    assert data["onnx_sha256"] == sha256_file(zoo_dir / "mlp.onnx")
    assert data["tuning"] == {
        "log_digest": _shipped_digest(art.manifest.preset),
        "tasks_tuned": 0,
        "tasks_total": art.manifest.tuning.tasks_total,
    }
    assert data["tuning"]["tasks_total"] >= 2
    assert data["compile_seconds"] > 0
    assert set(data["accuracy"]) == {"hidden", "logits"}
    for acc in data["accuracy"].values():
        assert acc["max_abs_err"] < 1e-3 and acc["cosine"] > 0.9999


def test_artifact_dir_holds_only_its_three_files(artifacts: dict[str, Artifact]) -> None:
    for art in artifacts.values():
        names = sorted(p.name for p in art.directory.iterdir())
        assert names == ["manifest.json", "model.so", "weights.npz"]


@pytest.mark.parametrize("name", ["resnet_block", "conv_net", "mlp"])
def test_loaded_model_matches_onnxruntime(
    artifacts: dict[str, Artifact], zoo_dir: Path, name: str
) -> None:
    model = tvmflow.load(artifacts[name].directory)
    feeds = random_inputs(model.inputs, seed=123)  # not the seed compile verified with
    expected = onnxruntime_outputs(zoo_dir / f"{name}.onnx", feeds)
    actual = model.run(feeds)
    assert list(actual) == [o.name for o in model.outputs]
    for acc in compare(actual, expected):
        scale = float(np.abs(expected[acc.name]).max())
        assert Tolerance().passes(acc, scale), acc


def test_call_with_keywords(artifacts: dict[str, Artifact]) -> None:
    model = tvmflow.load(artifacts["mlp"].directory)
    x = np.ones((4, 64), np.float32)
    out = model(x=x)
    np.testing.assert_array_equal(out["logits"], model.run({"x": x})["logits"])
    assert out["hidden"].shape == (4, 128)
    assert "x: float32[4,64]" in repr(model)


def test_inputs_validated_with_expected_signature(artifacts: dict[str, Artifact]) -> None:
    model = tvmflow.load(artifacts["mlp"].directory)
    cases: list[tuple[dict[str, np.ndarray], str]] = [
        ({"y": np.ones((4, 64), np.float32)}, "missing x; unknown y"),
        ({"x": np.ones((4, 65), np.float32)}, "x is float32\\[4,65\\]"),
        ({"x": np.ones((4, 64), np.float64)}, "x is float64\\[4,64\\]"),
    ]
    for feeds, pattern in cases:
        with pytest.raises(TvmflowError, match=pattern + ".*expected x: float32\\[4,64\\]"):
            model.run(feeds)


def test_tampered_library_is_refused(artifacts: dict[str, Artifact], tmp_path: Path) -> None:
    directory = _copy(artifacts["mlp"], tmp_path)
    with open(directory / "model.so", "ab") as f:
        f.write(b"\0")
    with pytest.raises(TvmflowError, match="does not match the sha256"):
        tvmflow.load(directory)


def test_other_format_version_is_refused(artifacts: dict[str, Artifact], tmp_path: Path) -> None:
    directory = _copy(artifacts["mlp"], tmp_path)
    _edit_manifest(directory, format_version=FORMAT_VERSION + 1)
    with pytest.raises(TvmflowError, match=f"format version {FORMAT_VERSION + 1}.*recompile"):
        tvmflow.load(directory)


def test_other_architecture_is_refused(artifacts: dict[str, Artifact], tmp_path: Path) -> None:
    directory = _copy(artifacts["mlp"], tmp_path)
    _edit_manifest(directory, arch="aarch64", preset="arm-neoverse-n1")
    with pytest.raises(TvmflowError, match="built for aarch64.*this machine is x86_64"):
        tvmflow.load(directory)


def test_missing_cpu_features_are_refused(artifacts: dict[str, Artifact], tmp_path: Path) -> None:
    directory = _copy(artifacts["mlp"], tmp_path)
    _edit_manifest(directory, cpu_features=["avx2", "amx_imaginary"])
    with pytest.raises(TvmflowError, match="needs CPU features amx_imaginary"):
        tvmflow.load(directory)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(TvmflowError, match="not a tvmflow artifact"):
        tvmflow.load(tmp_path)


def test_run_from_many_threads(artifacts: dict[str, Artifact]) -> None:
    model = tvmflow.load(artifacts["resnet_block"].directory)
    feeds = [random_inputs(model.inputs, seed=s) for s in range(4)]
    expected = [model.run(f)["probs"] for f in feeds]
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(12):
                k = (t + i) % len(feeds)
                results[(t, i)] = model.run(feeds[k])["probs"]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for (t, i), out in results.items():
        np.testing.assert_array_equal(out, expected[(t + i) % len(feeds)])
    assert len(results) == 48


def test_accuracy_failure_writes_nothing(zoo_dir: Path, tmp_path: Path) -> None:
    imported = load_onnx(zoo_dir / "resnet_block.onnx", {"image": (1, 3, 64, 64)})
    out = tmp_path / "strict"
    with pytest.raises(AccuracyError, match="beyond tolerance"):
        compile_model(
            imported,
            resolve_preset("x86"),
            out,
            CompileOptions(tolerance=Tolerance(atol=0.0, rtol=0.0)),
        )
    assert not out.exists()  # nor the scratch folder, nor the directory compile created


def test_verification_runs_twice_and_refuses_unstable_outputs(
    zoo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel reading memory it never wrote shows as a second run that differs from the
    first (here simulated: the second run's outputs are perturbed)."""
    from tvmflow import compile as compile_module
    from tvmflow.emulate import HostRunner, host_runner

    native = host_runner(resolve_preset("x86"))
    assert native is not None
    calls: list[int] = []

    def flaky(directory: Path, feeds: Any) -> dict[str, np.ndarray]:
        calls.append(1)
        outputs = native.run(directory, feeds)
        return {k: v + (len(calls) - 1) * 1e-3 for k, v in outputs.items()}

    monkeypatch.setattr(compile_module, "host_runner", lambda preset: HostRunner("flaky", flaky))
    imported = load_onnx(zoo_dir / "mlp.onnx", {"x": (1, 64)})
    out = tmp_path / "flaky"
    with pytest.raises(AccuracyError, match="two runs of the same inputs"):
        compile_model(imported, resolve_preset("x86"), out)
    assert len(calls) == 2 and not (out / "model.so").exists()


def test_no_verify_skips_accuracy(zoo_dir: Path, tmp_path: Path) -> None:
    imported = load_onnx(zoo_dir / "mlp.onnx", {"x": (1, 64)})
    art = compile_model(
        imported, resolve_preset("x86"), tmp_path / "nv", CompileOptions(verify=False)
    )
    assert art.manifest.accuracy is None and art.library.is_file()


def test_no_logs_means_untuned(zoo_dir: Path) -> None:
    import tvm

    from tvmflow.frontend import to_relax
    from tvmflow.lowering import fuse, kernel_names

    target = tvm.target.Target(resolve_preset("x86").target)
    mod = fuse(to_relax(load_onnx(zoo_dir / "mlp.onnx", {"x": (1, 64)})), target)
    total = len(kernel_names(mod))
    _, info = apply_records(mod, target, [])
    assert (info.log_digest, info.tasks_tuned, info.tasks_total) == (None, 0, total)


RUNTIME_ONLY_PROBE = """
import sys, json
import numpy as np
import tvmflow
from tvmflow.cli import main
m = tvmflow.load(sys.argv[1])
out = m.run({"x": np.ones((4, 64), np.float32)})
cli_rc = main(["run", sys.argv[1], "--random"])
maps = open("/proc/self/maps").read()
info = {
    "tvm_imported": sorted(k for k in sys.modules if k == "tvm" or k.startswith("tvm.")),
    "compiler_loaded": "libtvm_compiler" in maps,
    "runtime_loaded": "libtvm_runtime" in maps,
    "onnx_imported": "onnx" in sys.modules,
    "stages_imported": sorted(k for k in sys.modules if k.startswith("tvmflow.")),
    "logits_sum": float(out["logits"].sum()),
    "cli_rc": cli_rc,
}
import tvm  # later in the same process: the compiler still loads (compile after load works)
info["compiler_after"] = not tvm.base._RUNTIME_ONLY
print(json.dumps(info))
"""


def test_loader_imports_neither_tvm_nor_its_compiler(artifacts: dict[str, Artifact]) -> None:
    """`tvmflow.load` + run and `tvmflow run` hold tvm_ffi and libtvm_runtime.so only."""
    directory = artifacts["mlp"].directory
    env = {k: v for k, v in os.environ.items() if k != "TVM_USE_RUNTIME_LIB"}
    proc = subprocess.run(
        [sys.executable, "-c", RUNTIME_ONLY_PROBE, str(directory)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["runtime_loaded"] and not info["compiler_loaded"]
    assert info["tvm_imported"] == [] and not info["onnx_imported"]
    assert not {"tvmflow.compile", "tvmflow.frontend", "tvmflow.tune"} & set(
        info["stages_imported"]
    )
    assert info["cli_rc"] == 0 and info["compiler_after"]
    expected = tvmflow.load(directory).run({"x": np.ones((4, 64), np.float32)})["logits"].sum()
    assert info["logits_sum"] == pytest.approx(float(expected), rel=1e-5)


def test_num_threads_sizes_pool_without_pinning_caller(artifacts: dict[str, Artifact]) -> None:
    import tvm

    before = os.sched_getaffinity(0)
    try:
        model = tvmflow.load(artifacts["mlp"].directory, num_threads=1)
        model.run({"x": np.ones((4, 64), np.float32)})
        assert tvm.runtime.num_threads() == 1
        assert os.sched_getaffinity(0) == before
    finally:
        tvmflow.load(artifacts["mlp"].directory, num_threads=len(before))
