"""Fixtures for schedule-rule tests: real fused kernels from small Relax graphs, and a checker
that runs a kernel scheduled and unscheduled on the same random data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tvm
from tvm import relax, s_tir

from tvmflow.lowering import fuse
from tvmflow.targets import resolve_preset

TARGET = tvm.target.Target(resolve_preset("x86").target)
AVX2 = tvm.target.Target(resolve_preset("x86-avx2").target)  # runs on any AVX-512 host too
NEON = tvm.target.Target(resolve_preset("arm-neoverse-n1").target)  # compiled, not run


def fused_kernels(
    inputs: dict[str, tuple[tuple[int, ...], str]],
    body: Callable[..., relax.Expr],
    target: tvm.target.Target = TARGET,
) -> dict[str, tvm.tirx.PrimFunc]:
    """Kernels tvmflow's lowering makes of `body(*input_vars)` (constants are folded in)."""
    bb = relax.BlockBuilder()
    params = [relax.Var(n, relax.TensorType(s, d)) for n, (s, d) in inputs.items()]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(*params))
        bb.emit_func_output(out)
    mod = relax.transform.AttachAttrLayoutFreeBuffers()(fuse(bb.get(), target))
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def only_kernel(
    inputs: dict[str, tuple[tuple[int, ...], str]],
    body: Callable[..., relax.Expr],
    target: tvm.target.Target = TARGET,
) -> tvm.tirx.PrimFunc:
    """The single kernel a one-op (plus epilogue) graph lowers to."""
    kernels = fused_kernels(inputs, body, target)
    assert len(kernels) == 1, sorted(kernels)
    return next(iter(kernels.values()))


def const(shape: tuple[int, ...], seed: int = 0) -> relax.Constant:
    return relax.const(np.random.default_rng(seed).standard_normal(shape).astype("float32"))


def _random_args(func: tvm.tirx.PrimFunc, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for param in func.params:
        shape = [int(d) for d in param.shape]
        dtype = np.dtype(str(param.dtype))
        if dtype.kind == "f":
            arrays.append(rng.standard_normal(shape).astype(dtype))
        else:
            arrays.append(rng.integers(-3, 4, size=shape).astype(dtype))
    return arrays


def _run(func: tvm.tirx.PrimFunc, arrays: list[np.ndarray], target: Any) -> list[np.ndarray]:
    lib = tvm.compile(
        tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target
    )
    dev = tvm.cpu(0)
    tensors = [tvm.runtime.tensor(a, dev) for a in arrays]
    lib["main"](*tensors)
    return [t.numpy() for t in tensors]


def assert_schedule_matches(
    func: tvm.tirx.PrimFunc, sch: s_tir.Schedule, target: Any = TARGET, rtol: float = 1e-5
) -> None:
    """The scheduled kernel writes what the unscheduled one writes, on every buffer."""
    arrays = _random_args(func, seed=1)
    expected = _run(func, [a.copy() for a in arrays], target)
    actual = _run(sch.mod["main"].with_attr("tirx.is_scheduled", True), arrays, target)
    for exp, act in zip(expected, actual, strict=True):
        scale = float(np.abs(exp).max(initial=0.0)) or 1.0
        np.testing.assert_allclose(act, exp, rtol=0, atol=rtol * scale * 10 + 1e-6)


def lowers_for(sch: s_tir.Schedule, target: Any) -> None:
    """The scheduled kernel goes through TVM's whole lowering and LLVM codegen for `target`."""
    func = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)


def loop_kinds(sch: s_tir.Schedule) -> set[str]:
    """The For kinds in a scheduled kernel ('parallel', 'vectorized', ...)."""
    import tvm_ffi

    kinds: set[str] = set()

    def visit(node: tvm.tirx.For) -> None:
        kinds.add(tvm.tirx.ForKind(int(node.kind)).name.lower())

    tvm_ffi.structural_walk(sch.mod["main"].body, [(tvm.tirx.For, visit)], order="post")
    return kinds
