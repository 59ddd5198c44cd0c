"""ONNX ai.onnx.preview.training optimizers (opset 1): Adagrad, Adam, Momentum.

Pure elementwise update rules over any number of (X, G, state...) groups sharing the learning
rate R and step count T, as onnx's reference: inputs R, T, X1..Xn, G1..Gn, then each state
(H, or V then H, or V) for all groups; outputs the new Xs then each new state. T's tests
(bias correction, first-step momentum) are runtime `where`s on the scalar T.
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

from tvmflow.ops import Converter

Expr = Any
DOMAIN = "ai.onnx.preview.training"


def _groups(inputs: Any, states: int) -> list[list[Expr]]:
    """[X, G, state...] per optimized tensor."""
    data = list(inputs)[2:]
    n = len(data) // (2 + states)
    return [[data[i + k * n] for k in range(2 + states)] for i in range(n)]


def _scalar(value: float, like: Expr) -> Expr:
    return relax.const(value, str(like.ty.dtype))


def _outputs(groups: list[list[Expr]]) -> Expr:
    """New Xs first, then each state for all groups (the inputs' order)."""
    return relax.Tuple([group[k] for k in range(len(groups[0])) for group in groups])


class Adagrad(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        rate, step = inputs[0], inputs[1]
        results = []
        for x, g, h in _groups(inputs, 1):
            t = op.astype(step, str(x.ty.dtype))
            one = _scalar(1.0, x)
            r = op.divide(
                rate, op.add(one, op.multiply(t, _scalar(attr.get("decay_factor", 0.0), x)))
            )
            g = bb.emit(op.add(op.multiply(_scalar(attr.get("norm_coefficient", 0.0), x), x), g))
            h_new = bb.emit(op.add(h, op.multiply(g, g)))
            scale = op.add(op.sqrt(h_new), _scalar(attr.get("epsilon", 1e-6), x))
            results.append([bb.emit(op.subtract(x, op.divide(op.multiply(r, g), scale))), h_new])
        return _outputs(results)


class Adam(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        rate, step = inputs[0], inputs[1]
        alpha, beta = float(attr.get("alpha", 0.9)), float(attr.get("beta", 0.999))
        results = []
        for x, g, v, h in _groups(inputs, 2):
            one = _scalar(1.0, x)
            t = op.astype(step, str(x.ty.dtype))
            g = bb.emit(op.add(op.multiply(_scalar(attr.get("norm_coefficient", 0.0), x), x), g))
            v_new = bb.emit(
                op.add(op.multiply(_scalar(alpha, x), v), op.multiply(_scalar(1 - alpha, x), g))
            )
            h_new = bb.emit(
                op.add(
                    op.multiply(_scalar(beta, x), h),
                    op.multiply(_scalar(1 - beta, x), op.multiply(g, g)),
                )
            )
            scale = op.add(op.sqrt(h_new), _scalar(attr.get("epsilon", 1e-6), x))
            corrected = op.divide(
                op.sqrt(op.subtract(one, op.power(_scalar(beta, x), t))),
                op.subtract(one, op.power(_scalar(alpha, x), t)),
            )  # bias correction from the first step on (T > 0)
            r = op.where(op.greater(step, relax.const(0, str(step.ty.dtype))), corrected, one)
            r = op.multiply(op.astype(rate, str(x.ty.dtype)), r)
            x_new = op.subtract(x, op.multiply(r, op.divide(v_new, scale)))
            post = _scalar(1 - float(attr.get("norm_coefficient_post", 0.0)), x)
            results.append([bb.emit(op.multiply(post, x_new)), v_new, h_new])
        return _outputs(results)


class Momentum(OnnxOpConverter):
    @classmethod
    def _impl_v1(cls, bb: Any, inputs: Any, attr: dict[str, Any], params: Any) -> Expr:
        op = relax.op
        rate, step = inputs[0], inputs[1]
        mode = attr["mode"].decode() if isinstance(attr["mode"], bytes) else str(attr["mode"])
        if mode not in ("standard", "nesterov"):
            raise ValueError(f"Momentum: mode {mode!r} is not 'standard' or 'nesterov'")
        results = []
        for x, g, v in _groups(inputs, 1):
            alpha = _scalar(float(attr["alpha"]), x)
            first = op.less_equal(step, relax.const(0, str(step.ty.dtype)))
            beta = op.where(first, _scalar(1.0, x), _scalar(float(attr["beta"]), x))
            g = bb.emit(op.add(op.multiply(_scalar(attr["norm_coefficient"], x), x), g))
            v_new = bb.emit(op.add(op.multiply(alpha, v), op.multiply(beta, g)))
            direction = v_new if mode == "standard" else op.add(g, op.multiply(alpha, v_new))
            r = op.astype(rate, str(x.ty.dtype))
            results.append([bb.emit(op.subtract(x, op.multiply(r, direction))), v_new])
        return _outputs(results)


CONVERTERS = (
    Converter("Adagrad", Adagrad, since=1, domain=DOMAIN),
    Converter("Adam", Adam, since=1, domain=DOMAIN),
    Converter("Momentum", Momentum, since=1, domain=DOMAIN),
)
