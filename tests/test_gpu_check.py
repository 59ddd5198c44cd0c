"""scripts/gpu_check.py: everything that can be checked without the GPU host.

The bundle is built for this interpreter (the host's is 3.12) so its runtime-only TVM can
really be imported here; the run step then goes as far as a machine without a GPU allows.
A CPU preset bundle runs the whole run step (load, compare, cold-load probe, timings).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from onnx import numpy_helper

from tvmflow import targets, zoo

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"
HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def _run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.mark.parametrize("name", ["resnet18", "encoder"])
def test_replayed_weights_are_the_zoo_models_weights(name: str) -> None:
    """The GPU host has no onnx: PyTorch gets its weights by replaying the zoo's seed."""
    onnx_weights = {i.name: numpy_helper.to_array(i) for i in zoo.MODELS[name]().graph.initializer}
    replayed = gpu_check.zoo_weights(name)
    drawn = {k for k in onnx_weights if k.endswith((".w", ".b"))}  # the rest are constants
    assert set(replayed) == drawn
    for key, value in replayed.items():
        np.testing.assert_array_equal(value, onnx_weights[key], err_msg=key)


@pytest.mark.parametrize("name", ["resnet18", "encoder"])
def test_torch_models_match_onnxruntime(name: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from tvmflow.accuracy import onnxruntime_outputs

    path = zoo.save(name, tmp_path)
    shape = (1, 3, 224, 224) if name == "resnet18" else (1, 128, 256)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = onnxruntime_outputs(path, {("image" if name == "resnet18" else "hidden_in"): x})
    (ref,) = expected.values()
    with torch.inference_mode():
        got = gpu_check.torch_model(name, gpu_check.zoo_weights(name))(torch.from_numpy(x))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_arguments() -> None:
    args = gpu_check.parse_args(["bundle", "--group", "zoo"])
    assert args.models == ("resnet18", "encoder")
    assert args.out == ROOT / ".cache" / "gpu-bundle" / "zoo"
    assert gpu_check.parse_args(["bundle", "--models", "mlp,encoder"]).models == ("mlp", "encoder")
    for bad in (
        ["bundle"],
        ["bundle", "--group", "zoo", "--models", "mlp"],
        ["bundle", "--models", "x"],
    ):
        with pytest.raises(SystemExit) as exc:
            gpu_check.parse_args(bad)
        assert exc.value.code == 2
    run = gpu_check.parse_args(["run", "b", "-o", "out", "--no-torch"])
    assert (run.bundle, run.out, run.no_torch, run.iters) == (Path("b"), Path("out"), True, 50)
    # every model in a group is one the check knows
    assert all(m in gpu_check.MODELS for group in gpu_check.GROUPS.values() for m in group)


def test_size_limit_names_the_models() -> None:
    meta = {"payload_bytes": 70 * 2**20, "artifacts": {"resnet18": {"artifact_bytes": 47 * 2**20}}}
    assert gpu_check.size_problem(meta, 60.0) == (
        "the bundle would be 70.0 MiB, over --limit-mib 60.0 (artifact MiB: resnet18 47.0); "
        "bundle fewer --models"
    )
    assert gpu_check.size_problem({**meta, "payload_bytes": 59 * 2**20}, 60.0) is None


def test_a_bundle_that_is_not_one_is_refused(tmp_path: Path) -> None:
    proc = _run_script("run", str(tmp_path), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert f"gpu-check: {tmp_path} is not a bundle" in proc.stderr


@pytest.fixture(scope="module")
def cuda_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if targets.find_tool("nvcc") is None:
        pytest.skip("nvcc not installed")
    out = tmp_path_factory.mktemp("bundle") / "mlp"
    args = ["bundle", "--models", "mlp", "--python-version", HERE, "--xz-level", "0"]
    proc = _run_script(*args, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_bundle_holds_a_runtime_only_tvm_and_the_artifacts(cuda_bundle: Path) -> None:
    meta = json.loads((cuda_bundle / "bundle.json").read_text())
    assert meta["models"] == ["mlp"] and meta["preset"] == "cuda-sm90"
    assert meta["artifacts"]["mlp"]["device_code"]["format"] == "fatbin"
    payload = cuda_bundle / "payload.tar.xz"
    assert meta["payload_bytes"] == payload.stat().st_size < 16 * 2**20
    with tarfile.open(payload) as tar:
        names = set(tar.getnames())
    for needed in (
        "./python/tvm/lib/libtvm_runtime.so",
        "./python/tvm/lib/libtvm_runtime_cuda.so",
        "./python/tvm/runtime/__init__.py",
        "./python/tvm_ffi/__init__.py",
        "./python/tvmflow/runtime.py",
        "./python/tvmflow/cuda.py",
        "./artifacts/mlp/model.so",
        "./artifacts/mlp/manifest.json",
        "./references/mlp.npz",
    ):
        assert needed in names
    for left_out in ("lib/libtvm_compiler.so", "3rdparty", "src", "web", "include"):
        assert not any(n.startswith(f"./python/tvm/{left_out}") for n in names), left_out
    assert not any("__pycache__" in n for n in names)


def test_run_step_without_a_gpu_exits_2_using_the_bundled_tvm(
    cuda_bundle: Path, tmp_path: Path
) -> None:
    proc = _run_script(
        "run", str(cuda_bundle), "-o", str(tmp_path / "out"), "--workdir", str(tmp_path / "w")
    )
    assert proc.returncode == 2
    assert f"from {tmp_path / 'w' / 'python' / 'tvm'}, runtime only" in proc.stderr
    assert "gpu-check: cannot load TVM's CUDA runtime" in proc.stderr
    with np.load(tmp_path / "w" / "references" / "mlp.npz") as ref:
        assert sorted(ref.files) == ["in.x", "out.hidden", "out.logits"]


def test_run_step_refuses_another_python(cuda_bundle: Path, tmp_path: Path) -> None:
    meta = json.loads((cuda_bundle / "bundle.json").read_text())
    other = tmp_path / "bundle"
    other.mkdir()
    (other / "payload.tar.xz").symlink_to(cuda_bundle / "payload.tar.xz")
    (other / "bundle.json").write_text(json.dumps({**meta, "python": "3.12"}))
    if HERE == "3.12":
        pytest.skip("this interpreter is the host's")
    proc = _run_script("run", str(other), "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "carries apache-tvm-ffi for Python 3.12, this is Python" in proc.stderr


def test_run_step_end_to_end_on_a_cpu_bundle(tmp_path: Path) -> None:
    """A CPU-preset bundle exercises the whole run step here: cold load in a fresh process,
    the reference check, timings, the JSON and markdown reports."""
    args = ["--models", "mlp", "--preset", "x86", "--python-version", HERE, "--xz-level", "0"]
    proc = _run_script("bundle", *args, "-o", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    proc = _run_script("run", str(tmp_path / "b"), "-o", str(tmp_path / "out"), "--iters", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    (result,) = report["results"]
    assert result["name"] == "mlp" and result["ok"] is True and result["error"] is None
    assert result["max_abs_err"] < 1e-4
    for key in ("cold_import_s", "cold_load_s", "cold_first_run_s", "tvm_ms", "tvm_run_ms"):
        assert result[key] > 0, key
    assert result["torch_eager_ms"] is None  # mlp has no PyTorch twin
    table = (tmp_path / "out" / "gpu-check.md").read_text()
    assert "| mlp | yes |" in table
