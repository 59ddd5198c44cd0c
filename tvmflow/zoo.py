"""Small generated ONNX models: the built-in demo model and the test suite's fixtures.

Built with onnx.helper and seeded weights, so they need no download and are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    """Accumulates nodes and seeded initializers for one graph."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...], scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        std = scale if scale is not None else (2.0 / max(fan_in, 1)) ** 0.5
        data = (self.rng.standard_normal(shape) * std).astype(np.float32)
        self.inits.append(numpy_helper.from_array(data, name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def conv_bn_relu(self, x: str, cin: int, cout: int, name: str, stride: int = 1) -> str:
        w = self.weight(f"{name}.w", (cout, cin, 3, 3))
        y = self.op("Conv", [x, w], f"{name}.conv", pads=[1, 1, 1, 1], strides=[stride, stride])
        bn = [
            self.weight(f"{name}.{p}", (cout,), s)
            for p, s in (("gamma", 0.1), ("beta", 0.1), ("mean", 0.1))
        ]
        var = f"{name}.var"
        self.inits.append(numpy_helper.from_array(np.ones(cout, np.float32), var))
        y = self.op("BatchNormalization", [y, *bn, var], f"{name}.bn")
        return self.op("Relu", [y], f"{name}.relu")

    def model(
        self,
        name: str,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def _image_input(channels: int, size: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, size, size])


def resnet_block(seed: int = 0) -> onnx.ModelProto:
    """Stem conv + one residual block + classifier head; batch dim is symbolic ("N")."""
    b = _Builder(seed)
    x = b.conv_bn_relu("image", 3, 32, "stem", stride=2)
    y = b.conv_bn_relu(x, 32, 32, "block.a")
    y = b.conv_bn_relu(y, 32, 32, "block.b")
    y = b.op("Relu", [b.op("Add", [x, y], "block.add")], "block.out")
    y = b.op("GlobalAveragePool", [y], "pool")
    y = b.op("Flatten", [y], "flat")
    logits = b.op(
        "Gemm", [y, b.weight("fc.w", (10, 32)), b.weight("fc.b", (10,), 0.1)], "logits", transB=1
    )
    b.op("Softmax", [logits], "probs", axis=-1)
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])
    return b.model("resnet_block", [_image_input(3, 64)], [out])


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """Two conv layers with a stride and a max-pool: the smallest CNN worth compiling."""
    b = _Builder(seed)
    y = b.conv_bn_relu("image", 3, 16, "c1")
    y = b.op("MaxPool", [y], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    y = b.conv_bn_relu(y, 16, 32, "c2", stride=2)
    y = b.op("GlobalAveragePool", [y], "gap")
    b.op("Flatten", [y], "features")
    out = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 32])
    return b.model("conv_net", [_image_input(3, 32)], [out])


def mlp(seed: int = 0) -> onnx.ModelProto:
    """MatMul/Add/Gelu-style MLP with two outputs (hidden state and logits)."""
    b = _Builder(seed)
    h = b.op("MatMul", ["x", b.weight("w1", (64, 128))], "h.mm")
    h = b.op("Add", [h, b.weight("b1", (128,), 0.1)], "h.add")
    h = b.op("Tanh", [h], "hidden")
    y = b.op("MatMul", [h, b.weight("w2", (128, 16))], "y.mm")
    b.op("Add", [y, b.weight("b2", (16,), 0.1)], "logits")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    outs = [
        helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", 128]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 16]),
    ]
    return b.model("mlp", [x], outs)


def _conv(
    b: _Builder,
    x: str,
    cin: int,
    cout: int,
    name: str,
    k: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: str | None = "Relu",
) -> str:
    """Conv (bias folded, as exported inference graphs have it) + optional activation."""
    w = b.weight(f"{name}.w", (cout, cin // groups, k, k))
    bias = b.weight(f"{name}.b", (cout,), 0.05)
    pad = k // 2
    y = b.op(
        "Conv", [x, w, bias], f"{name}.conv", pads=[pad] * 4, strides=[stride] * 2, group=groups
    )
    if act == "Clip6":
        lo, hi = f"{name}.lo", f"{name}.hi"
        if lo not in {i.name for i in b.inits}:
            b.inits.append(numpy_helper.from_array(np.array(0.0, np.float32), lo))
            b.inits.append(numpy_helper.from_array(np.array(6.0, np.float32), hi))
        return b.op("Clip", [y, lo, hi], f"{name}.act")
    return b.op(act, [y], f"{name}.act") if act else y


def _classifier(b: _Builder, x: str, channels: int, classes: int = 1000) -> str:
    y = b.op("GlobalAveragePool", [x], "gap")
    y = b.op("Flatten", [y], "flat")
    w, bias = b.weight("fc.w", (classes, channels)), b.weight("fc.b", (classes,), 0.05)
    return b.op("Gemm", [y, w, bias], "logits", transB=1)


def resnet18(seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 (He et al.) at 224x224, random weights: the standard CNN benchmark shape."""
    b = _Builder(seed)
    x = _conv(b, "image", 3, 64, "stem", k=7, stride=2)
    x = b.op("MaxPool", [x], "stem.pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            name = f"layer{stage + 1}.{block}"
            stride = 2 if stage > 0 and block == 0 else 1
            y = _conv(b, x, cin, cout, f"{name}.conv1", stride=stride)
            y = _conv(b, y, cout, cout, f"{name}.conv2", act=None)
            if stride != 1 or cin != cout:
                x = _conv(b, x, cin, cout, f"{name}.down", k=1, stride=stride, act=None)
            x = b.op("Relu", [b.op("Add", [x, y], f"{name}.add")], f"{name}.out")
            cin = cout
    _classifier(b, x, 512)
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])
    return b.model("resnet18", [_image_input(3, 224)], [out])


def mobilenet_v2(seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 (Sandler et al.) at 224x224, width 1.0, random weights, ReLU6 as Clip."""
    b = _Builder(seed)
    x = _conv(b, "image", 3, 32, "stem", stride=2, act="Clip6")
    cin = 32
    settings = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )
    for i, (expand, cout, repeats, first_stride) in enumerate(settings):
        for r in range(repeats):
            name, stride = f"block{i}.{r}", first_stride if r == 0 else 1
            hidden = cin * expand
            y = x if expand == 1 else _conv(b, x, cin, hidden, f"{name}.expand", k=1, act="Clip6")
            y = _conv(b, y, hidden, hidden, f"{name}.dw", stride=stride, groups=hidden, act="Clip6")
            y = _conv(b, y, hidden, cout, f"{name}.project", k=1, act=None)
            x = b.op("Add", [x, y], f"{name}.add") if stride == 1 and cin == cout else y
            cin = cout
    x = _conv(b, x, cin, 1280, "head", k=1, act="Clip6")
    _classifier(b, x, 1280)
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])
    return b.model("mobilenet_v2", [_image_input(3, 224)], [out])


def encoder(
    seed: int = 0, layers: int = 4, d: int = 256, heads: int = 4, seq: int = 128
) -> onnx.ModelProto:
    """A post-LN transformer encoder (BERT-style): MatMul, Softmax, LayerNormalization, Erf-GELU."""
    b = _Builder(seed)
    dh = d // heads

    def const(name: str, value: np.ndarray) -> str:
        b.inits.append(numpy_helper.from_array(value, name))
        return name

    def linear(x: str, cin: int, cout: int, name: str) -> str:
        y = b.op("MatMul", [x, b.weight(f"{name}.w", (cin, cout))], f"{name}.mm")
        return b.op("Add", [y, b.weight(f"{name}.b", (cout,), 0.02)], f"{name}.out")

    def layer_norm(x: str, name: str) -> str:
        g = const(f"{name}.g", np.ones(d, np.float32))
        beta = const(f"{name}.beta", np.zeros(d, np.float32))
        return b.op("LayerNormalization", [x, g, beta], f"{name}.out", axis=-1, epsilon=1e-5)

    split_shape = const("split_shape", np.array([1, seq, heads, dh], np.int64))
    merge_shape = const("merge_shape", np.array([1, seq, d], np.int64))
    scale = const("scale", np.array(1.0 / np.sqrt(dh), np.float32))
    sqrt2, one, half = (
        const(n, np.array(v, np.float32))
        for n, v in (("sqrt2", np.sqrt(2.0)), ("one", 1.0), ("half", 0.5))
    )
    x = "hidden_in"
    for i in range(layers):
        p = f"l{i}"
        qkv = []
        for part in ("q", "k", "v"):
            y = b.op("Reshape", [linear(x, d, d, f"{p}.{part}"), split_shape], f"{p}.{part}.split")
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]
            qkv.append(b.op("Transpose", [y], f"{p}.{part}.t", perm=perm))
        s = b.op("Mul", [b.op("MatMul", qkv[:2], f"{p}.scores"), scale], f"{p}.scaled")
        a = b.op("Softmax", [s], f"{p}.probs", axis=-1)
        ctx = b.op(
            "Transpose", [b.op("MatMul", [a, qkv[2]], f"{p}.ctx")], f"{p}.ctx.t", perm=[0, 2, 1, 3]
        )
        ctx = b.op("Reshape", [ctx, merge_shape], f"{p}.ctx.merge")
        x = layer_norm(b.op("Add", [x, linear(ctx, d, d, f"{p}.o")], f"{p}.res1"), f"{p}.ln1")
        h = linear(x, d, 4 * d, f"{p}.ff1")
        erf = b.op("Erf", [b.op("Div", [h, sqrt2], f"{p}.gelu.div")], f"{p}.gelu.erf")
        gelu = b.op(
            "Mul",
            [b.op("Mul", [h, b.op("Add", [erf, one], f"{p}.gelu.add")], f"{p}.gelu.mul"), half],
            f"{p}.gelu",
        )
        x = layer_norm(
            b.op("Add", [x, linear(gelu, 4 * d, d, f"{p}.ff2")], f"{p}.res2"), f"{p}.ln2"
        )
    b.op("Identity", [x], "hidden_out")
    inp = helper.make_tensor_value_info("hidden_in", TensorProto.FLOAT, [1, seq, d])
    out = helper.make_tensor_value_info("hidden_out", TensorProto.FLOAT, [1, seq, d])
    return b.model("encoder", [inp], [out])


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "resnet_block": resnet_block,
    "conv_net": conv_net,
    "mlp": mlp,
    "resnet18": resnet18,
    "mobilenet_v2": mobilenet_v2,
    "encoder": encoder,
}
DEMO_MODEL = "resnet_block"
DEMO_SHAPES = {"image": (1, 3, 64, 64)}


def save(name: str, directory: Path) -> Path:
    """Write a built-in model to `directory/<name>.onnx` and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.onnx"
    onnx.save(MODELS[name](), str(path))
    return path


# qconv: QDQ variants of the built-in models (int8 kernels' tests and benchmarks)
def quantize_qdq(
    model: onnx.ModelProto,
    directory: Path,
    shapes: Mapping[str, tuple[int, ...]],
    activations: str = "uint8",
    per_channel: bool = False,
) -> Path:
    """onnxruntime's `quantize_static` of `model` in QDQ format (`activations` uint8 or
    int8, int8 weights, per-tensor or `per_channel`), calibrated on 4 seeded N(0, 1) batches
    of `shapes` (its float inputs); writes `directory/<graph name>-qdq.onnx`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Feeds(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.feeds = iter(
                [
                    {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
                    for _ in range(4)
                ]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    directory.mkdir(parents=True, exist_ok=True)
    fp32 = directory / f"{model.graph.name}.onnx"
    out = directory / f"{model.graph.name}-qdq.onnx"
    onnx.save(model, fp32)
    quantize_static(
        str(fp32),
        str(out),
        Feeds(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
    )
    return out
