"""fast_pow: x ** 2..4 by a constant as multiplies, so the kernels vectorize, same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import AVX2, TARGET
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules


def _gelu_tanh(shape, exponent):
    """HuggingFace gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x ** exponent)))."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    c = relax.const
    with bb.function("main", [x]):
        with bb.dataflow():
            cube = relax.op.power(x, c(np.full(exponent.shape, exponent, "float32")))
            inner = relax.op.multiply(
                c(0.7978845608, "float32"),
                relax.op.add(x, relax.op.multiply(c(0.044715, "float32"), cube)),
            )
            half_x = relax.op.multiply(x, c(0.5, "float32"))
            out = bb.emit_output(
                relax.op.multiply(half_x, relax.op.add(c(1.0, "float32"), relax.op.tanh(inner)))
            )
        bb.emit_func_output(out)
    return bb.get()


def _run(mod, target, x):
    exe = build(apply_default_schedules(mod, target), target)
    return relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("target", [TARGET, AVX2], ids=["avx512", "avx2"])
@pytest.mark.parametrize("exponent", [np.array(3.0), np.array([3.0])], ids=["scalar", "shape1"])
def test_gelu_tanh_cube_matches_and_calls_no_libm(target, exponent):
    mod = fuse(_gelu_tanh((2, 7, 40), exponent), target)
    scripts = [f.script() for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert not any("T.pow" in s for s in scripts), "pow is a scalar powf call per element"
    x = np.linspace(-12, 12, 2 * 7 * 40, dtype="float32").reshape(2, 7, 40)
    got = _run(mod, target, x)
    x64 = x.astype("float64")
    want = 0.5 * x64 * (1 + np.tanh(0.7978845608 * (x64 + 0.044715 * x64**3)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exponent", [2.0, 4.0, 2.5, -3.0])
def test_power_by_constant_matches_unrewritten(exponent):
    """Rewritten (2, 4) or not (2.5, -3), x ** c equals numpy's, negatives included."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((3, 50), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.power(x, relax.const(exponent, "float32")))
        bb.emit_func_output(out)
    mod = fuse(bb.get(), TARGET)
    funcs = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    scripts = "".join(f.script() for f in funcs)
    assert ("T.pow" in scripts) == (exponent not in (2.0, 4.0))
    x_np = np.linspace(-3, 3, 150, dtype="float32").reshape(3, 50)
    if exponent == 2.5:
        x_np = np.abs(x_np) + 0.1
    if exponent < 0:
        x_np = np.where(np.abs(x_np) < 0.1, 0.5, x_np).astype("float32")
    got = _run(mod, TARGET, x_np)
    np.testing.assert_allclose(got, x_np.astype("float64") ** exponent, rtol=1e-6, atol=1e-6)
