"""Lowering pass: two constant-weight conv2d branches over one input that are added become
one conv (structural reparameterization, as RepVGG / MobileOne do at export).

Exports that keep MobileOne's training-time branches (FastViT: a 3x3 stride-2 conv plus a
1x1 stride-2 conv over the image, summed) run each branch as its own conv kernel and write
its output once more. With the same stride, dilation 1, groups and layouts, the smaller
kernel's taps are a window of the larger one's (its padding says where), so the sum is one
conv with the summed weights (the smaller zero-padded into place) plus the summed biases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import tvm
    from tvm import relax


def ParallelConvBranches() -> tvm.transform.Pass:
    """Module pass: see the module docstring. Each round merges one pair per add, so three or
    more branches take more rounds: repeat while the conv count drops."""
    import tvm

    from tvmflow.call_rewrite import call_rewrite_pass

    once = call_rewrite_pass("ParallelConvBranches", [("relax.add", 2)], per_function=_rewriter)

    def transform(mod: tvm.IRModule, _: Any) -> tvm.IRModule:
        count = _conv_count(mod)
        while True:
            mod = once(mod)
            now = _conv_count(mod)
            if now == count:
                return mod
            count = now

    return tvm.transform.module_pass(transform, opt_level=0, name="ParallelConvBranches")


def _conv_count(mod: tvm.IRModule) -> int:
    import tvm_ffi
    from tvm import relax

    seen = [0]

    def visit(call: relax.Call) -> None:
        seen[0] += getattr(call.op, "name", "") == "relax.nn.conv2d"

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            tvm_ffi.structural_walk(func.body, [(relax.Call, visit)], order="pre")
    return seen[0]


def _rewriter(func: relax.Function) -> Any:
    from tvm import relax

    from tvmflow.matmul_reshape import _uses

    values = relax.analysis.get_var2val(func)
    uses = _uses(func)

    def branch(expr: relax.Expr) -> tuple[relax.Call, np.ndarray | None] | None:
        """The constant-weight conv2d (and constant bias) `expr` is bound to, if it is one and
        nothing else reads it (else merging would compute that conv twice)."""
        import tvm

        value = values.get(expr)
        bias = None
        if _is_op(value, "relax.add") and uses[expr] == 1:
            bias = constant(value.args[1])
            if bias is None:
                return None
            expr = value.args[0]
            value = values.get(expr)
        if uses[expr] != 1:
            return None
        if not _is_op(value, "relax.nn.conv2d"):
            return None
        if not isinstance(value.args[1], tvm.ir.GenericConst):
            return None
        return value, bias

    def constant(expr: relax.Expr) -> np.ndarray | None:
        """A constant, or a reshape of one (how the ONNX importer writes a conv's bias)."""
        import tvm

        value = values.get(expr)
        if _is_op(value, "relax.reshape") and isinstance(value.args[0], tvm.ir.GenericConst):
            shape = [int(d) for d in value.ty.shape]
            return value.args[0].value.numpy().reshape(shape)
        return expr.value.numpy() if isinstance(expr, tvm.ir.GenericConst) else None

    def rewrite(call: relax.Call) -> relax.Expr | None:
        if not isinstance(call, relax.Call):
            return None  # rewrite_call's later rounds can hand back a bound variable
        a, b = (branch(arg) for arg in call.args)
        if a is None or b is None:
            return None
        merged = _merged(a[0], b[0])
        if merged is None:
            return None
        biases = [bias for _, bias in (a, b) if bias is not None]
        if not biases:
            return merged
        total = biases[0] if len(biases) == 1 else biases[0] + biases[1]
        if total.ndim != 4 or total.shape[0] != 1 or total.shape[2:] != (1, 1):
            return None  # only a per-channel bias is known to broadcast like this
        return relax.op.add(merged, relax.const(total))

    return rewrite


def _merged(a: relax.Call, b: relax.Call) -> relax.Expr | None:
    """One conv computing conv `a` + conv `b`, or None when their windows do not nest."""
    from tvm import relax

    if not a.args[0].same_as(b.args[0]):
        return None
    keys = ("strides", "dilation", "groups", "data_layout", "kernel_layout", "out_layout")
    if any(str(getattr(a.attrs, k)) != str(getattr(b.attrs, k)) for k in keys):
        return None
    if (a.attrs.data_layout, a.attrs.kernel_layout) != ("NCHW", "OIHW"):
        return None
    if any(int(d) != 1 for d in a.attrs.dilation) or str(a.ty.dtype) != str(b.ty.dtype):
        return None
    wa, wb = (c.args[1].value.numpy() for c in (a, b))
    if wa.shape[2] * wa.shape[3] < wb.shape[2] * wb.shape[3]:
        a, b, wa, wb = b, a, wb, wa
    if wa.shape[:2] != wb.shape[:2] or wa.dtype != wb.dtype:
        return None
    pa, pb = ([int(p) for p in c.attrs.padding] for c in (a, b))  # top, left, bottom, right
    offsets = []
    for axis in (0, 1):
        before = pa[axis] - pb[axis]
        after = pa[axis + 2] - pb[axis + 2]
        if before < 0 or after < 0 or before + wb.shape[2 + axis] + after != wa.shape[2 + axis]:
            return None
        offsets.append(before)
    weight = wa.copy()
    (h, w), (kh, kw) = offsets, wb.shape[2:]
    weight[:, :, h : h + kh, w : w + kw] += wb
    return relax.op.nn.conv2d(
        a.args[0],
        relax.const(weight),
        strides=a.attrs.strides,
        padding=pa,
        groups=int(a.attrs.groups),
        data_layout="NCHW",
        kernel_layout="OIHW",
        out_layout="NCHW",
        out_dtype=str(a.ty.dtype),
    )


def _is_op(value: Any, name: str) -> bool:
    from tvm import relax

    return isinstance(value, relax.Call) and getattr(value.op, "name", "") == name
