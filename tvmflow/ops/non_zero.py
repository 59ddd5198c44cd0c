"""ONNX NonZero (opset 9+) as a kernel of tvmflow's, so that artifacts run on TVM's runtime.

TVM's converter emits `relax.nonzero`, which runs as the packed function `relax.run.nonzero`:
it lives in TVM's compiler library, not in `libtvm_runtime.so`, so an artifact with a
NonZero compiled and verified (in the compiling process) but failed to load where tvmflow's
runtime runs it ("Cannot find ffi::Function relax.run.nonzero"). Here one serial kernel
walks the input's mask (x != 0, NaN included, as numpy reads it) in row-major order and
writes each set entry's coordinates as a column of a [rank, size] buffer, and its count; the
output is those columns, [rank, count] with the count a symbolic dim (data-dependent, as
ONNX defines it). A scalar counts as rank 1 (TVM's and onnxruntime's shape).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from tvmflow.ops.common import first_along
from tvmflow.ops.recurrent_kernel import KERNEL_ATTR

Expr = Any


def non_zero_kernel(rank: int) -> tvm.tirx.PrimFunc:
    """Coordinates of the set entries of a flattened int8 mask whose dims are `dims`."""
    zero = tvm.tirx.const(0, "int8")

    @T.prim_func(s_tir=True)
    def kernel(
        var_x: T.handle,
        dims: T.Buffer((rank,), "int64"),  # type: ignore[valid-type]
        var_out: T.handle,
        count: T.Buffer((1,), "int64"),  # type: ignore[valid-type]
    ) -> None:
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, KERNEL_ATTR: True})
        n = T.int64()
        x = T.match_buffer(var_x, (n,), "int8")
        out = T.match_buffer(var_out, (rank, n), "int64")
        state = T.alloc_buffer((2,), "int64", scope="local")  # found, index left to unravel
        state[0] = T.int64(0)
        for i in range(n):
            if x[i] != zero:
                state[1] = i
                for a in range(rank):
                    out[rank - 1 - a, state[0]] = T.floormod(state[1], dims[rank - 1 - a])
                    state[1] = T.floordiv(state[1], dims[rank - 1 - a])
                state[0] = state[0] + T.int64(1)
        count[0] = state[0]

    return kernel.without_attr("global_symbol")  # the module names it (bb.add_func)


def non_zero(bb: Any, x: Expr) -> Expr:
    """The [rank, count] coordinates of x's nonzero entries, by `non_zero_kernel`."""
    x = bb.normalize(x)
    rank = max(x.ty.ndim, 1)
    dims = bb.emit(relax.op.shape_to_tensor(relax.op.shape_of(x)))
    if x.ty.ndim == 0:
        dims = relax.const(np.array([1]), "int64")
    flat = bb.emit(relax.op.reshape(x, [-1]))
    if flat.ty.dtype != "bool":
        dtype = str(flat.ty.dtype)
        mask = relax.op.not_equal(flat, relax.const(0, dtype))
        if "float" in dtype:  # NaN is nonzero (numpy's reading); LLVM's != said no
            mask = relax.op.logical_or(mask, relax.op.isnan(flat))
        flat = bb.emit(mask)
    flat = bb.emit(relax.op.astype(flat, "int8"))  # LLVM rejected a compare of i1s
    size = flat.ty.shape.values[0]
    kernel = bb.add_func(non_zero_kernel(rank), "non_zero")
    found = bb.emit(
        relax.call_tir(
            kernel,
            [flat, dims],
            [relax.TensorType([rank, size], "int64"), relax.TensorType([1], "int64")],
        )
    )
    columns = bb.emit(relax.TupleGetItem(found, 0))
    count = bb.emit(relax.TupleGetItem(found, 1))
    return first_along(bb, columns, 1, count, "nonzero_count")


def NonZeroAsKernel() -> tvm.transform.Pass:
    """Module pass: every `relax.nonzero` call (TVM's NonZero converter, and its Compress and
    dynamic-axes Squeeze, which call it themselves) becomes `non_zero`."""
    nonzero = tvm.ir.Op.get("relax.nonzero")

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> Expr:
            call = super().visit_call_(call)
            if isinstance(call.op, tvm.ir.Op) and call.op.same_as(nonzero):
                return non_zero(self.builder_, call.args[0])
            return call

    def run(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not any(
            isinstance(f, relax.Function) and _calls(f, nonzero) for _, f in mod.functions_items()
        ):
            return mod
        rewrite = Rewrite(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewrite.builder_.update_func(gv, rewrite.visit_expr(func))
        return rewrite.builder_.get()

    return tvm.transform.module_pass(run, opt_level=0, name="NonZeroAsKernel")


def _calls(func: Any, op: Any) -> bool:
    found: list[Any] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and expr.op.same_as(op):
            found.append(expr)

    relax.analysis.post_order_visit(func, visit)
    return bool(found)
