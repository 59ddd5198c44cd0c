"""QDQ models (onnxruntime's `quantize_static`, QuantFormat.QDQ, of zoo CNNs): verification
allows an output that a DequantizeLinear produces to differ from onnxruntime by one
quantization step (a rounding boundary crossed in another fp32 summation order), and
nothing more: a wrong scale still fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tvmflow import zoo
from tvmflow.accuracy import (
    Tolerance,
    compare,
    onnxruntime_outputs,
    output_quant_steps,
    quant_allowance,
)
from tvmflow.api import compile as compile_model
from tvmflow.cli import main
from tvmflow.manifest import read_manifest


def quantize_qdq(model: onnx.ModelProto, directory: Path, size: int) -> Path:
    """`zoo.quantize_qdq` of an image model at `size` x `size`."""
    return zoo.quantize_qdq(model, directory, {"image": (1, 3, size, size)})


@pytest.fixture(scope="module")
def qdq_conv_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantize_qdq(zoo.conv_net(), tmp_path_factory.mktemp("qdq"), 32)


def _output_scale(model: Path) -> float:
    graph = onnx.load(str(model)).graph
    node = next(n for n in graph.node if n.output[0] == graph.output[0].name)
    scale = next(t for t in graph.initializer if t.name == node.input[1])
    return float(numpy_helper.to_array(scale))


def test_quant_step_is_the_output_dequantize_scale(qdq_conv_net: Path, tmp_path: Path) -> None:
    assert output_quant_steps(qdq_conv_net) == {
        "features": pytest.approx(_output_scale(qdq_conv_net))
    }
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(zoo.conv_net(), fp32)
    assert output_quant_steps(fp32) == {}


def _feeds() -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)}


def test_one_step_passes_two_steps_fail(qdq_conv_net: Path) -> None:
    expected = onnxruntime_outputs(qdq_conv_net, _feeds())
    quant = quant_allowance(qdq_conv_net, _feeds(), expected)
    step = output_quant_steps(qdq_conv_net)["features"]
    assert quant == {"features": (step, 1)}  # onnxruntime's int8 kernels agree here
    tolerance = Tolerance()
    magnitude = float(np.abs(expected["features"]).max())
    for shift, ok in ((1, True), (2, False)):
        actual = {"features": expected["features"].copy()}
        actual["features"][0, 3] += shift * step
        (acc,) = compare(actual, expected, quant)
        assert acc.quant_step == step
        assert tolerance.passes(acc, magnitude) is ok, (shift, acc)
        (strict,) = compare(actual, expected)  # without the step: fp32 outputs' rule
        assert not tolerance.passes(strict, magnitude)


def test_a_wrong_weight_scale_fails(qdq_conv_net: Path, tmp_path: Path) -> None:
    """A weight dequantized with a scale 5 % off (what a wrong kernel or scale does) moves
    the outputs by many steps: the quantization-aware check still fails it."""
    model = onnx.load(str(qdq_conv_net))
    weight_dq = next(
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] == "c2.w_quantized"
    )
    scale = next(t for t in model.graph.initializer if t.name == weight_dq.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 1.05, scale.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, broken)
    expected = onnxruntime_outputs(qdq_conv_net, _feeds())
    actual = onnxruntime_outputs(broken, _feeds())
    (acc,) = compare(actual, expected, quant_allowance(qdq_conv_net, _feeds(), expected))
    assert acc.max_abs_err > 2 * _output_scale(qdq_conv_net)
    assert not Tolerance().passes(acc, float(np.abs(expected["features"]).max()))


def test_qdq_conv_net_compiles_verified(
    qdq_conv_net: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tvmflow compile` records the step it allowed and prints it."""
    out = tmp_path / "art"
    args = ["compile", str(qdq_conv_net), "-t", "x86", "-o", str(out)]
    assert main([*args, "--input-shape", "image=1,3,32,32"]) == 0
    (acc,) = read_manifest(out).accuracy or ()
    step = _output_scale(qdq_conv_net)
    assert acc.quant_step == pytest.approx(step)
    assert acc.max_abs_err <= step
    assert f"allowed 1 x quantization step {step:.3g}" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_qdq_zoo_cnn_compiles_by_default(name: str, tmp_path: Path) -> None:
    """The cases that failed before: a QDQ ResNet-18's logits flip by one step (21 % of
    them), a MobileNetV2's by three, as far as onnxruntime's own int8 kernels do. Where
    the target has VNNI they run as int8 kernels (tvmflow.qdq) and equal onnxruntime's
    int8 session exactly."""
    from tvmflow.engines import onnxruntime_session
    from tvmflow.runtime import load
    from tvmflow.targets import host_cpu_features

    model = quantize_qdq(getattr(zoo, name)(), tmp_path, 224)
    artifact = compile_model(
        model, "x86", output=tmp_path / "art", input_shapes={"image": (1, 3, 224, 224)}
    )
    (acc,) = artifact.manifest.accuracy or ()
    assert acc.quant_step is not None and acc.quant_steps >= 1
    assert acc.max_abs_err <= acc.quant_steps * acc.quant_step * 1.001
    if "avx512_vnni" in host_cpu_features():
        feeds = {"image": np.random.default_rng(2).standard_normal((1, 3, 224, 224), np.float32)}
        ours = load(artifact.directory, 1).run(feeds)
        (theirs,) = onnxruntime_session(model, 1).run(["logits"], feeds)
        np.testing.assert_array_equal(ours["logits"], theirs)


def _dq_model(scale: np.ndarray, as_constant: bool) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    s = numpy_helper.from_array(scale.astype(np.float32), "s")
    nodes = [helper.make_node("DequantizeLinear", ["x", "s"], ["y"], axis=1)]
    inits = [s]
    if as_constant:
        nodes.insert(0, helper.make_node("Constant", [], ["s"], value=s))
        inits = []
    graph = helper.make_graph(nodes, "dq", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_quant_steps_per_tensor_only(tmp_path: Path) -> None:
    """A Constant node's scale counts; a per-axis scale leaves the output to atol/rtol."""
    cases = {"constant": (np.array(0.25), True), "per_axis": (np.array([0.1, 0.2, 0.3]), False)}
    found = {}
    for name, (scale, as_constant) in cases.items():
        onnx.save(_dq_model(scale, as_constant), tmp_path / f"{name}.onnx")
        found[name] = output_quant_steps(tmp_path / f"{name}.onnx")
    assert found == {"constant": {"y": 0.25}, "per_axis": {}}


def test_qdq_encoder_float_output_may_differ_as_far_as_onnxruntime_int8(tmp_path: Path) -> None:
    """A QDQ transformer's output comes from a float LayerNorm (no step): its int8 kernels
    may differ from the reference as far as onnxruntime's int8 session does, no further."""
    from tvmflow.engines import onnxruntime_session

    shapes = {"hidden_in": (1, 16, 64)}
    model = zoo.quantize_qdq(zoo.encoder(layers=1, d=64, heads=2, seq=16), tmp_path, shapes)
    feeds = {"hidden_in": np.random.default_rng(0).standard_normal(shapes["hidden_in"], np.float32)}
    expected = onnxruntime_outputs(model, feeds)
    (int8,) = onnxruntime_session(model).run(["hidden_out"], feeds)
    spread = float(np.abs(int8.astype(np.float64) - expected["hidden_out"]).max())
    assert spread > 1e-3  # onnxruntime's int8 kernels are not the float reference
    assert quant_allowance(model, feeds, expected) == {"hidden_out": (pytest.approx(spread), 1)}
    artifact = compile_model(model, "x86", output=tmp_path / "art", input_shapes=shapes)
    (acc,) = artifact.manifest.accuracy or ()
    assert acc.quant_step is not None and acc.max_abs_err <= acc.quant_step
