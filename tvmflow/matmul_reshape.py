"""Lowering pass: a reshape that only adds or drops unit dims after a matmul (+ bias) moves
onto the matmul's input, so what follows fuses into the matmul's kernel.

Exporters flatten a Linear's [1, T, C] input to [T, C], run a 2-D Gemm and reshape the
result back to [1, T, N]. Relax's FuseOps fuses elementwise ops after a matmul but not a
reshape, so the GELU after a transformer's first MLP matmul ran as its own kernel over the
whole [T, N] activation (deit_tiny: 2.4% of its time; bert_4l 2.9%). Computed as
`matmul(reshape(x, [1, T, C]), w) + b` the result needs no reshape; the reshapes left on
inputs become free views (RewriteDataflowReshape).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm
    from tvm import relax


def MatmulReshape() -> tvm.transform.Pass:
    """Module pass: see the module docstring."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("MatmulReshape", [("relax.reshape", 2)], per_function=_rewriter)


def _rewriter(func: relax.Function) -> Any:
    from tvm import relax

    values = relax.analysis.get_var2val(func)
    uses = _uses(func)

    def rewrite(call: relax.Call) -> relax.Expr | None:
        source = call.args[0]
        bias = None
        value = values.get(source)
        if _is_op(value, "relax.add") and uses[source] == 1:
            product, bias = value.args
            value = values.get(product)
            source = product
        if not _is_op(value, "relax.matmul") or uses[source] != 1:
            return None
        x, w = value.args
        out = _static_shape(call)
        now = _static_shape(value)
        k = _static_shape(x)
        if out is None or now is None or k is None or len(_static_shape(w) or []) != 2:
            return None
        if [d for d in out if d != 1] != [d for d in now if d != 1] or out[-1] != now[-1]:
            return None
        if bias is not None and not _broadcasts_as_row(bias, out[-1]):
            return None
        inner = values.get(x)
        if _is_op(inner, "relax.reshape"):
            x = inner.args[0]  # a reshape of a reshape: one view of the original
        rows = [*out[:-1], k[-1]]
        if _static_shape(x) != rows:
            x = relax.op.reshape(x, rows)
        moved = relax.op.matmul(x, w, value.attrs.out_dtype)
        return moved if bias is None else relax.op.add(moved, bias)

    return rewrite


def _uses(func: relax.Function) -> Counter[Any]:
    """How many times each variable is read in the function."""
    import tvm_ffi
    from tvm import relax

    seen: Counter[Any] = Counter()

    def visit(var: relax.Var) -> None:
        seen[var] += 1

    tvm_ffi.structural_walk(func.body, [(relax.Var, visit)], order="pre")
    # each binding's own variable was visited once where it is defined
    for block in func.body.blocks:
        for binding in block.bindings:
            seen[binding.var] -= 1
    return seen


def _is_op(value: Any, name: str) -> bool:
    from tvm import relax

    return isinstance(value, relax.Call) and getattr(value.op, "name", None) == name


def _static_shape(expr: Any) -> list[int] | None:
    import tvm

    shape = getattr(expr.ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return [int(d) for d in shape]


def _broadcasts_as_row(bias: Any, n: int) -> bool:
    """Whether a bias adds the same [n] row to every output row at any rank ([n], [1, n])."""
    shape = _static_shape(bias)
    return shape is not None and shape[-1:] in ([n], [1]) and all(d == 1 for d in shape[:-1])
