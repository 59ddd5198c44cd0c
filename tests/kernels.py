"""Fixtures for schedule-rule tests: real fused kernels from small Relax graphs, and a checker
that runs a kernel scheduled and unscheduled on the same random data (tvmflow.kernel_check)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tvm
from tvm import relax, s_tir

from tvmflow.kernel_check import RuleKernel, check
from tvmflow.lowering import fuse
from tvmflow.targets import host_cores, resolve_preset

TARGET = tvm.target.Target(resolve_preset("x86").target)
AVX2 = tvm.target.Target(resolve_preset("x86-avx2").target)  # runs on any AVX-512 host too
# Tests of a rule's AVX-512 geometry (16-lane vectors, its tile and cache fits) name it: on an
# AVX2 host TARGET is x86-avx2. The kernel check builds such code for the host's plain LLVM
# where the host cannot run it.
AVX512 = tvm.target.Target({**resolve_preset("x86-avx512-vnni").target, "num-cores": host_cores()})
NEON = tvm.target.Target(resolve_preset("arm-neoverse-n1").target)  # compiled, not run


def graph_module(
    inputs: Mapping[str, tuple[tuple[int, ...], str]], body: Callable[..., relax.Expr]
) -> tvm.IRModule:
    """The Relax module `main(*inputs) = body(*input_vars)`, before tvmflow's lowering."""
    bb = relax.BlockBuilder()
    params = [relax.Var(n, relax.TensorType(s, d)) for n, (s, d) in inputs.items()]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(*params))
        bb.emit_func_output(out)
    return bb.get()


def fused_module(
    inputs: Mapping[str, tuple[tuple[int, ...], str]],
    body: Callable[..., relax.Expr],
    target: tvm.target.Target = TARGET,
) -> tvm.IRModule:
    """The module tvmflow's lowering makes of `body(*input_vars)`, fused and unscheduled."""
    return relax.transform.AttachAttrLayoutFreeBuffers()(fuse(graph_module(inputs, body), target))


def fused_kernels(
    inputs: Mapping[str, tuple[tuple[int, ...], str]],
    body: Callable[..., relax.Expr],
    target: tvm.target.Target = TARGET,
) -> dict[str, tvm.tirx.PrimFunc]:
    """Kernels tvmflow's lowering makes of `body(*input_vars)` (constants are folded in)."""
    mod = fused_module(inputs, body, target)
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


def kernel_named(
    prefix: str,
    inputs: dict[str, tuple[tuple[int, ...], str]],
    body: Callable[..., relax.Expr],
    target: tvm.target.Target = TARGET,
) -> tvm.tirx.PrimFunc:
    """The one kernel whose name starts with `prefix` (graphs with weight-layout kernels too)."""
    (func,) = [f for n, f in fused_kernels(inputs, body, target).items() if n.startswith(prefix)]
    return func


def const(shape: tuple[int, ...], seed: int = 0) -> relax.Constant:
    return relax.const(np.random.default_rng(seed).standard_normal(shape).astype("float32"))


def assert_schedule_matches(
    func: tvm.tirx.PrimFunc, sch: s_tir.Schedule, target: Any = TARGET
) -> None:
    """The scheduled kernel writes what the unscheduled one writes, on every output, with
    outputs and scratch poisoned first (the compile-time check every rule's kernels get)."""
    kernel = RuleKernel("kernel", "rule", func, sch.mod["main"])
    assert check([kernel], target) == []


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
