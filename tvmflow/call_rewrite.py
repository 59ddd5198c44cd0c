"""The one shape of tvmflow's Relax graph rewrites: every call of some ops, in every Relax
function of the module, is replaced by what a rewrite returns for it (None keeps the call).

The lowering's passes (conv weights to HWIO, conv1d as conv2d, conv padding for the register
tile, upsampling conv_transpose as pixel shuffle, sigmoid as tanh, bf16 compute) differ only in
the ops they match and the rewrite, so the pattern and the module walk live here once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm
    from tvm import relax

Rewrite = Callable[["relax.Call"], "relax.Expr | None"]


def call_rewrite_pass(
    name: str,
    ops: Sequence[tuple[str, int]],
    rewrite: Rewrite | None = None,
    per_function: Callable[[relax.Function], Rewrite] | None = None,
) -> tvm.transform.Pass:
    """A module pass named `name` rewriting calls of `ops` ((op name, argument count) pairs).

    Give `rewrite` for a rewrite of the call alone, or `per_function` to build one per Relax
    function (for rewrites that look at the function's bindings)."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    if (rewrite is None) == (per_function is None):
        raise ValueError("call_rewrite_pass takes exactly one of rewrite and per_function")
    patterns = [is_op(op)(*(wildcard() for _ in range(arity))) for op, arity in ops]
    pattern = patterns[0]
    for other in patterns[1:]:
        pattern = pattern | other

    def transform(mod: tvm.IRModule, _: Any) -> tvm.IRModule:
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                chosen = rewrite if per_function is None else per_function(func)
                assert chosen is not None

                def rewriter(expr: relax.Expr, _: Any, chosen: Rewrite = chosen) -> relax.Expr:
                    new = chosen(expr)
                    return expr if new is None else new

                mod[gv] = rewrite_call(pattern, rewriter, func)
        return mod

    return tvm.transform.module_pass(transform, opt_level=0, name=name)
