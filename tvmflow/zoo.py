"""Small generated ONNX models: the built-in demo model and the test suite's fixtures.

Built with onnx.helper and seeded weights, so they need no download and are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: object) -> str:
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


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "resnet_block": resnet_block,
    "conv_net": conv_net,
    "mlp": mlp,
}
DEMO_MODEL = "resnet_block"
DEMO_SHAPES = {"image": (1, 3, 64, 64)}


def save(name: str, directory: Path) -> Path:
    """Write a built-in model to `directory/<name>.onnx` and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.onnx"
    onnx.save(MODELS[name](), str(path))
    return path
