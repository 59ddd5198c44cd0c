"""fast_sigmoid: sigmoid as 0.5 + 0.5 tanh(x/2), so the kernels vectorize, same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tests.kernels import AVX2, TARGET
from tvmflow.lowering import build, fuse
from tvmflow.schedules import apply_default_schedules


def _silu(shape, dtype="float32"):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.multiply(x, relax.op.sigmoid(x)))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("target", [TARGET, AVX2], ids=["avx512", "avx2"])
def test_silu_matches_and_calls_no_libm(target):
    mod = fuse(_silu((2, 16, 9, 13)), target)
    scripts = [f.script() for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert not any("T.sigmoid" in s for s in scripts), "sigmoid is a scalar expf call per element"
    exe = build(apply_default_schedules(mod, target), target)
    # from deep negative (exp(-x) overflows) through 0 to deep positive
    x = np.linspace(-120, 120, 2 * 16 * 9 * 13, dtype="float32").reshape(2, 16, 9, 13)
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = x * (1 / (1 + np.exp(-x.astype("float64"))))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
