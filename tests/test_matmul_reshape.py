"""MatmulReshape: a unit-dim reshape after matmul (+ bias) moves to the matmul's input, so the
GELU after it fuses into the matmul's kernel; results unchanged."""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from tests.kernels import TARGET, const, fused_kernels
from tvmflow.matmul_reshape import MatmulReshape


def _gelu(x: relax.Expr) -> relax.Expr:
    erf = relax.op.erf(relax.op.divide(x, relax.const(1.4142135, "float32")))
    return relax.op.multiply(
        relax.op.multiply(x, relax.op.add(erf, relax.const(1.0, "float32"))),
        relax.const(0.5, "float32"),
    )


def _flattened_linear(x: relax.Expr) -> relax.Expr:
    """A Linear as exporters write it: [1, T, C] flattened, 2-D Gemm, reshaped back."""
    flat = relax.op.reshape(x, [37, 24])
    y = relax.op.add(relax.op.matmul(flat, const((24, 48))), const((48,), 1))
    return _gelu(relax.op.reshape(y, [1, 37, 48]))


def _module(body) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 37, 24), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(x))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    exe = tvm.compile(mod, target=TARGET)
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_gelu_fuses_into_the_matmul_kernel():
    kernels = fused_kernels({"x": ((1, 37, 24), "float32")}, _flattened_linear)
    fused = [name for name in kernels if "matmul" in name]
    assert len(fused) == 1 and "erf" in fused[0], sorted(kernels)


def test_results_are_unchanged():
    mod = _module(_flattened_linear)
    x = np.random.default_rng(0).standard_normal((1, 37, 24)).astype("float32")
    np.testing.assert_allclose(_run(MatmulReshape()(mod), x), _run(mod, x), rtol=1e-5, atol=1e-5)


def test_a_matmul_result_used_twice_is_left_alone():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 37, 24), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            flat = bb.emit(relax.op.reshape(x, [37, 24]))
            y = bb.emit(relax.op.matmul(flat, const((24, 48))))
            back = bb.emit(relax.op.reshape(y, [1, 37, 48]))
            out = bb.emit_output(relax.op.add(back, relax.op.sum(y)))
        bb.emit_func_output(out)
    mod = bb.get()
    assert tvm_ffi.structural_equal(MatmulReshape()(mod), mod)


def test_bound_the_way_the_frontend_binds_it_is_moved():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 37, 24), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            flat = bb.emit(relax.op.reshape(x, [37, 24]))
            y = bb.emit(relax.op.add(relax.op.matmul(flat, const((24, 48))), const((48,))))
            out = bb.emit_output(relax.op.reshape(y, [1, 37, 48]))
        bb.emit_func_output(out)
    moved = MatmulReshape()(bb.get())["main"].script()
    # the matmul now reads x itself: no [37, 24] flattening is left
    assert "R.shape([37, 24])" not in moved
