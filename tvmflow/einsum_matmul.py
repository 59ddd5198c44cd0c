"""Lowering pass: a two-operand einsum that is a (batched) matrix product becomes permute_dims
+ reshape + matmul, so the matmul rules (register-tiled micro-kernels) run it.

Relax legalizes `einsum` to one generic reduction (topi.einsum) that no matmul rule
recognizes: MaxViT's attention scores `BGHID,BGHJD->BGHIJ` were claimed by the row-norm rule
as a reduction over D, 3.7 ms of its pool/reduce time where the same product as MatMul runs
as a GEMM. Each einsum letter is a batch dim (both operands and the output), a row dim (first
operand and output), a column dim (second operand and output) or a contracted dim (both
operands only); the operands are permuted to [batch, rows, contracted] and [batch,
contracted, columns], the row / column / contracted dims merged, and the product permuted to
the output's order. Permutes and reshapes that would change nothing are left out. Other
einsums (one or three operands, repeated letters, ellipses, letters summed within one
operand, broadcast batch dims, symbolic shapes) keep Relax's legalization.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm
    from tvm import relax


def EinsumAsMatmul() -> tvm.transform.Pass:
    """Module pass: see the module docstring."""
    from tvmflow.call_rewrite import call_rewrite_pass

    return call_rewrite_pass("EinsumAsMatmul", [("relax.einsum", 1)], per_function=_rewriter)


def _rewriter(func: relax.Function) -> Any:
    from tvm import relax

    values = relax.analysis.get_var2val(func)

    def rewrite(call: relax.Call) -> relax.Expr | None:
        operands = call.args[0]
        if isinstance(operands, relax.Var):
            operands = values.get(operands)
        if not isinstance(operands, relax.Tuple) or len(operands.fields) != 2:
            return None
        a, b = operands.fields
        shapes = (_static_shape(a), _static_shape(b))
        if shapes[0] is None or shapes[1] is None:
            return None
        plan = matmul_plan(str(call.attrs.subscripts), shapes[0], shapes[1])
        return None if plan is None else _emit(a, b, plan)

    return rewrite


class Plan:
    """How an einsum maps onto a matmul: the operands' permutations and merged shapes, the
    product's unmerged shape and the permutation to the output's order."""

    def __init__(
        self,
        perms: tuple[list[int], list[int], list[int]],
        shapes: tuple[list[int], list[int], list[int]],
    ) -> None:
        self.perm_a, self.perm_b, self.perm_out = perms
        self.shape_a, self.shape_b, self.shape_product = shapes


def matmul_plan(subscripts: str, shape_a: list[int], shape_b: list[int]) -> Plan | None:
    """The matmul form of `subscripts` over operands of these shapes, or None."""
    text = subscripts.replace(" ", "")
    if "->" not in text or "." in text:
        return None
    inputs, out = text.split("->")
    parts = inputs.split(",")
    if len(parts) != 2:
        return None
    a, b = parts
    if len(a) != len(shape_a) or len(b) != len(shape_b):
        return None
    if any(len(set(s)) != len(s) for s in (a, b, out)) or not set(out) <= set(a) | set(b):
        return None
    if (set(a) ^ set(b)) - set(out):
        return None  # a letter summed within one operand
    size = {**dict(zip(b, shape_b, strict=True)), **dict(zip(a, shape_a, strict=True))}
    if any(size[c] != dict(zip(b, shape_b, strict=True))[c] for c in set(a) & set(b)):
        return None  # a broadcast dim
    batch = [c for c in out if c in a and c in b]
    rows = [c for c in out if c in a and c not in b]
    cols = [c for c in out if c in b and c not in a]
    summed = [c for c in a if c in b and c not in out]
    if not summed:
        return None  # an outer product: no reduction to tile

    def merged(letters: list[str]) -> int:
        return math.prod(size[c] for c in letters)

    batch_shape = [size[c] for c in batch]
    order_a = [*batch, *rows, *summed]
    order_b = [*batch, *summed, *cols]
    product = [*batch, *rows, *cols]
    return Plan(
        perms=(
            [a.index(c) for c in order_a],
            [b.index(c) for c in order_b],
            [product.index(c) for c in out],
        ),
        shapes=(
            [*batch_shape, merged(rows), merged(summed)],
            [*batch_shape, merged(summed), merged(cols)],
            [size[c] for c in product],
        ),
    )


def _emit(a: relax.Expr, b: relax.Expr, plan: Plan) -> relax.Expr:
    from tvm import relax

    def arranged(x: relax.Expr, perm: list[int], shape: list[int]) -> relax.Expr:
        now = [(_static_shape(x) or [])[i] for i in perm]
        if perm != sorted(perm):
            x = relax.op.permute_dims(x, perm)
        return x if now == shape else relax.op.reshape(x, shape)

    product = relax.op.matmul(
        arranged(a, plan.perm_a, plan.shape_a), arranged(b, plan.perm_b, plan.shape_b)
    )
    if plan.shape_product != [*plan.shape_a[:-1], plan.shape_b[-1]]:
        product = relax.op.reshape(product, plan.shape_product)
    if plan.perm_out != sorted(plan.perm_out):
        product = relax.op.permute_dims(product, plan.perm_out)
    return product


def _static_shape(expr: Any) -> list[int] | None:
    import tvm

    shape = getattr(expr.ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape):
        return None
    return [int(d) for d in shape]
