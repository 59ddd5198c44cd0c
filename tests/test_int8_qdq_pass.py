"""tvmflow.qdq's QdqToInteger on real QDQ models (onnxruntime's `quantize_static`): every
conv, depthwise conv, Gemm and residual add runs as an int8 kernel, and the outputs are
bit-exact against onnxruntime's own int8 kernels (its default session), not just within
the quantization-step allowance the accuracy check grants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

from tests.test_qdq_models import quantize_qdq
from tvmflow import zoo
from tvmflow.api import compile as compile_model
from tvmflow.engines import onnxruntime_session
from tvmflow.frontend import load_onnx
from tvmflow.lowering import fused_module, kernel_names
from tvmflow.runtime import load
from tvmflow.schedules import kernel_rules
from tvmflow.targets import host_cpu_features, resolve_preset

VNNI = tvm.target.Target(resolve_preset("x86-avx512-vnni").target)
AVX512 = tvm.target.Target(resolve_preset("x86-avx512").target)
needs_vnni = pytest.mark.skipif(
    "avx512_vnni" not in host_cpu_features(), reason="this host has no AVX512-VNNI"
)
SIZE = 32


def inverted_residual_net() -> onnx.ModelProto:
    """Stem conv (3 channels, stride 2), max pool, a MobileNetV2 block (1x1 expand, 3x3
    depthwise, 1x1 project, residual add), classifier Gemm with 10 classes (not a multiple
    of 16): one of each op the pass rewrites."""
    b = zoo._Builder(0)
    x = zoo._conv(b, "image", 3, 16, "stem", stride=2)
    x = b.op("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
    y = zoo._conv(b, x, 16, 64, "expand", k=1, act="Clip6")
    y = zoo._conv(b, y, 64, 64, "dw", groups=64, act="Clip6")
    y = zoo._conv(b, y, 64, 16, "project", k=1, act=None)
    y = b.op("Add", [x, y], "residual")
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y], "gap")], "flat")
    fc = [b.weight("fc.w", (10, 16)), b.weight("fc.b", (10,), 0.1)]
    b.op("Gemm", [y, *fc], "logits", transB=1)
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    return b.model("inverted_residual", [zoo._image_input(3, SIZE)], [out])


@pytest.fixture(scope="module")
def qdq_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantize_qdq(inverted_residual_net(), tmp_path_factory.mktemp("qdq-pass"), SIZE)


@pytest.fixture(scope="module")
def qdq_net_s8_per_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """int8 activations (shifted to uint8 inside the kernels), per-channel weight scales."""
    directory = tmp_path_factory.mktemp("qdq-pass-s8")
    shapes = {"image": (1, 3, SIZE, SIZE)}
    return zoo.quantize_qdq(inverted_residual_net(), directory, shapes, "int8", per_channel=True)


def _feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)}


def test_every_quantized_op_is_an_integer_kernel_on_vnni(qdq_net: Path):
    model = load_onnx(qdq_net, {"image": (1, 3, SIZE, SIZE)})
    mod = fused_module(model, VNNI, "fp32")
    with VNNI:
        mod = tvm.relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    rules = kernel_rules(mod, VNNI)
    assert sorted(r for r in rules.values() if r and r.startswith("Int8")) == [
        "Int8Conv2d",
        "Int8Conv2d",
        "Int8Conv2d",
        "Int8DepthwiseConv2d",
        "Int8Matmul",
    ]
    assert any("qadd" in name for name in rules)
    assert not any("conv2d" in name and not name.startswith("q") for name in rules)
    # without VNNI the float path stays (nothing would tensorize the integer kernels)
    assert not any(
        n.startswith("q") for n in kernel_rules(fused_module(model, AVX512, "fp32"), AVX512)
    )


@needs_vnni
@pytest.mark.parametrize("variant", ["qdq_net", "qdq_net_s8_per_channel"])
def test_bit_exact_against_onnxruntime_int8_kernels(
    variant: str, tmp_path: Path, request: pytest.FixtureRequest
):
    """Compiled with verification on (the step allowance); then compared with
    onnxruntime's int8 session, which runs QLinearConv / QLinearAdd: no value differs."""
    qdq_net = request.getfixturevalue(variant)
    artifact = compile_model(
        qdq_net, "x86", output=tmp_path / "art", input_shapes={"image": (1, 3, SIZE, SIZE)}
    )
    compiled = load(artifact.directory, 1)
    session = onnxruntime_session(qdq_net, 1)
    for seed in range(3):
        ours = compiled.run(_feeds(seed))["logits"]
        (theirs,) = session.run(["logits"], _feeds(seed))
        np.testing.assert_array_equal(ours, theirs)


def _qdq_add_model(
    scales: tuple[float, float, float], zeros: tuple[int, int, int]
) -> onnx.ModelProto:
    names = ("a", "b", "c")
    inits = [
        numpy_helper.from_array(np.array(s, np.float32), f"s{n}")
        for s, n in zip(scales, names, strict=True)
    ]
    inits += [
        numpy_helper.from_array(np.array(z, np.uint8), f"z{n}")
        for z, n in zip(zeros, names, strict=True)
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["fa"]),
        helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"]),
        helper.make_node("Add", ["fa", "fb"], ["sum"]),
        helper.make_node("QuantizeLinear", ["sum", "sc", "zc"], ["c"]),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.UINT8, [1, 1, 256, 256]) for n in names]
    graph = helper.make_graph(nodes, "qadd", io[:2], io[2:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@needs_vnni
def test_residual_add_matches_qlinearadd_on_every_input_pair(tmp_path: Path):
    """Q(DQ(a) + DQ(b)) over all 65536 (a, b) pairs, two scale sets: identical to
    onnxruntime's QLinearAdd (its float dequantize-add-quantize differs in a few pairs)."""
    a = np.repeat(np.arange(256, dtype=np.uint8), 256).reshape(1, 1, 256, 256)
    b = np.tile(np.arange(256, dtype=np.uint8), 256).reshape(1, 1, 256, 256)
    cases = [((0.0284262, 0.0424489, 0.0597453), (3, 122, 7)), ((0.11, 0.013, 0.07), (200, 0, 128))]
    for i, (scales, zeros) in enumerate(cases):
        path = tmp_path / f"qadd{i}.onnx"
        onnx.save(_qdq_add_model(scales, zeros), path)
        kernels = kernel_names(fused_module(load_onnx(path), VNNI, "fp32"))
        assert [k for k in kernels if k != "main"] == ["qadd"]
        art = compile_model(path, "x86", output=tmp_path / f"art{i}", verify=False)
        ours = load(art.directory, 1).run({"a": a, "b": b})["c"]
        (theirs,) = onnxruntime_session(path, 1).run(["c"], {"a": a, "b": b})
        np.testing.assert_array_equal(ours, theirs)
