"""A real dynamically quantized model (onnxruntime's `quantize_dynamic` of the zoo encoder,
two layers): compiles with verification on, its matmuls run as int8 kernels."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import tvm

from tvmflow import zoo
from tvmflow.api import compile as compile_model
from tvmflow.frontend import load_onnx
from tvmflow.lowering import fused_module
from tvmflow.schedules import kernel_rules
from tvmflow.targets import resolve_preset


@pytest.fixture(scope="module")
def quantized_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    directory = tmp_path_factory.mktemp("int8")
    fp32 = directory / "encoder.onnx"
    onnx.save(zoo.encoder(layers=2, d=128, heads=2, seq=32), fp32)
    out = directory / "encoder-qdyn.onnx"
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
    return out


def test_every_weight_matmul_is_an_int8_kernel_on_vnni(quantized_encoder: Path) -> None:
    target = tvm.target.Target(resolve_preset("x86-avx512-vnni").target)
    mod = fused_module(load_onnx(quantized_encoder), target, "fp32")
    with target:
        mod = tvm.relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    rules = list(kernel_rules(mod, target).values())
    ops = [n.op_type for n in onnx.load(str(quantized_encoder)).graph.node]
    assert ops.count("MatMulInteger") == 12
    assert rules.count("Int8Matmul") == 12


def test_compiles_with_verification_against_onnxruntime(
    quantized_encoder: Path, tmp_path: Path
) -> None:
    """Verification is on: compile raises unless the outputs match onnxruntime (basic graph
    optimizations, whose quantized ops are the model's own)."""
    artifact = compile_model(quantized_encoder, "x86", output=tmp_path / "art")
    assert (artifact.directory / "manifest.json").is_file()
