"""Every conv shape users bring, through every pass, on every CPU preset.

One ONNX model holds each variant as its own branch (one input, one output), so one compile
per preset covers them all: x86 presets are compiled and verified against onnxruntime (and
run twice) by `compile_model`; the ARM preset goes through the same lowering, rules, kernel
check and LLVM codegen, without linking or running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvmflow.compile import compile_model
from tvmflow.frontend import load_onnx
from tvmflow.targets import resolve_preset

# name: (input shape, weight shape, Conv attributes, op)
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict[str, Any], str]] = {
    "conv1d": ((1, 4, 33), (6, 4, 5), {"pads": [2, 2]}, "Conv"),
    "conv3d": ((1, 3, 5, 8, 8), (4, 3, 3, 3, 3), {"pads": [1] * 6}, "Conv"),
    "grouped": ((1, 8, 10, 10), (8, 2, 3, 3), {"pads": [1] * 4, "group": 4}, "Conv"),
    "depthwise": (
        (1, 8, 11, 9),
        (8, 1, 3, 3),
        {"pads": [1] * 4, "group": 8, "strides": [2, 2]},
        "Conv",
    ),
    "dilated": ((1, 4, 12, 12), (8, 4, 3, 3), {"pads": [2] * 4, "dilations": [2, 2]}, "Conv"),
    "asym_pad": ((1, 5, 9, 10), (7, 5, 3, 2), {"pads": [0, 1, 2, 0]}, "Conv"),
    "asym_pad_stride": (
        (1, 3, 15, 16),
        (8, 3, 3, 3),
        {"pads": [1, 0, 0, 1], "strides": [2, 2]},
        "Conv",
    ),
    "kernel_5x1": ((1, 1, 40, 6), (4, 1, 5, 1), {}, "Conv"),
    "transpose": (
        (1, 6, 7, 5),
        (6, 3, 3, 3),
        {"strides": [2, 2], "pads": [1, 0, 0, 1]},
        "ConvTranspose",
    ),
}


def conv_model(path: Path) -> Path:
    """The variants side by side, each with a bias and a ReLU (a fused epilogue)."""
    rng = np.random.default_rng(0)
    nodes, inputs, outputs, inits = [], [], [], []
    for name, (x_shape, w_shape, attrs, op) in VARIANTS.items():
        out_channels = (
            w_shape[1] * int(attrs.get("group", 1)) if op == "ConvTranspose" else w_shape[0]
        )
        inits += [
            numpy_helper.from_array(rng.standard_normal(w_shape).astype("float32"), f"{name}_w"),
            numpy_helper.from_array(
                rng.standard_normal(out_channels).astype("float32"), f"{name}_b"
            ),
        ]
        inputs.append(helper.make_tensor_value_info(f"{name}_x", TensorProto.FLOAT, x_shape))
        outputs.append(helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None))
        nodes += [
            helper.make_node(op, [f"{name}_x", f"{name}_w", f"{name}_b"], [f"{name}_c"], **attrs),
            helper.make_node("Relu", [f"{name}_c"], [f"{name}_y"]),
        ]
    graph = helper.make_graph(nodes, "convs", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("preset", ["x86-avx512", "x86-avx2"])
def test_conv_variants_match_onnxruntime(preset: str, tmp_path: Path) -> None:
    if not resolve_preset(preset).runs_on_host():
        pytest.skip(f"this host cannot run {preset}")
    imported = load_onnx(conv_model(tmp_path / "convs.onnx"))
    artifact = compile_model(imported, resolve_preset(preset), tmp_path / "art")
    assert artifact.manifest.accuracy is not None  # verified against onnxruntime, twice
    assert {a.name for a in artifact.manifest.accuracy} == {f"{n}_y" for n in VARIANTS}


def test_conv_variants_build_for_arm(tmp_path: Path) -> None:
    import tvm
    from tvm import relax

    from tvmflow.frontend import to_relax
    from tvmflow.lowering import fuse
    from tvmflow.schedules import apply_default_schedules

    target = tvm.target.Target(resolve_preset("arm-neoverse-n1").target)
    mod = fuse(to_relax(load_onnx(conv_model(tmp_path / "convs.onnx"))), target)
    mod = apply_default_schedules(mod, target)
    relax.build(mod, target=target)  # LLVM codegen for aarch64; linking needs the sysroot


@pytest.mark.parametrize("preset", ["x86-avx512", "x86-avx2", "arm-neoverse-n1"])
def test_magika_lowers_on_every_cpu_preset(preset: str) -> None:
    """magika (Conv 5x1 feeding slices, squeezes and pools over 3-D tensors) made TVM's
    ConvertLayout raise "Invalid SLayout"; the conv-only weight rewrite never looks there."""
    import tvm

    from tests.conftest import REAL_MODELS, real_model
    from tvmflow.frontend import to_relax
    from tvmflow.lowering import fuse, kernel_names

    target = tvm.target.Target(resolve_preset(preset).target)
    imported = load_onnx(real_model("magika.onnx"), REAL_MODELS["magika.onnx"])
    assert any("conv2d" in k for k in kernel_names(fuse(to_relax(imported), target)))


def test_weight_rewrite_touches_only_nchw_oihw_convs() -> None:
    from tvm import relax

    from tvmflow.lowering import conv_weights_hwio

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 8, 4), "float32"))
    y = relax.Var("y", relax.TensorType((1, 4, 8, 8), "float32"))
    w = relax.const(np.ones((6, 3, 3, 4), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.conv2d(x, w, data_layout="NHWC", kernel_layout="OHWI"))
            b = bb.emit(
                relax.op.nn.conv2d(y, relax.const(np.ones((6, 2, 3, 3), "float32")), groups=2)
            )
            out = bb.emit_output(relax.Tuple([a, b]))
        bb.emit_func_output(out)
    text = conv_weights_hwio()(bb.get()).script()
    assert 'kernel_layout="OHWI"' in text and 'kernel_layout="HWIO"' in text
    assert "permute_dims" not in text  # a constant weight is transposed in numpy


def test_weight_rewrite_transposes_constants_in_numpy() -> None:
    """A constant weight becomes an HWIO constant at once (FoldConstant JIT-compiled a
    transpose kernel per weight shape: most of DenseNet-121's FoldConstant time); a weight
    computed at run time gets a permute_dims."""
    import tvm
    from tvm import relax

    from tvmflow.lowering import conv_weights_hwio

    weight = np.random.default_rng(0).standard_normal((6, 4, 3, 2)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
    w = relax.Var("w", relax.TensorType((6, 4, 3, 2), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            a = bb.emit(relax.op.nn.conv2d(x, relax.const(weight)))
            b = bb.emit(relax.op.nn.conv2d(x, w))
            out = bb.emit_output(relax.Tuple([a, b]))
        bb.emit_func_output(out)
    mod = conv_weights_hwio()(bb.get())
    convs = [
        binding.value
        for block in mod["main"].body.blocks
        for binding in block.bindings
        if isinstance(binding.value, relax.Call)
        and getattr(binding.value.op, "name", "") == "relax.nn.conv2d"
    ]
    constant, computed = (c.args[1] for c in convs)
    assert isinstance(constant, tvm.ir.expr.Constant)
    np.testing.assert_array_equal(constant.value.numpy(), weight.transpose(2, 3, 1, 0))
    assert "permute_dims" in mod.script() and not isinstance(computed, tvm.ir.expr.Constant)
