"""Lowering pass for models exported in fp16: matmuls and convolutions accumulate in fp32.

Relax keeps an fp16 op's `out_dtype`, so TVM sums K products in fp16: each partial sum is
rounded to 11 bits, and a K=768 MatMul of an fp16 export came out 35x further from the exact
result than onnxruntime's (which accumulates in fp32 and rounds the result once). On CPUs
fp16 arithmetic is fp32 arithmetic plus conversions anyway, so the fp32 sum costs nothing.
The op gets `out_dtype="float32"` and its result is rounded to fp16 once, as onnxruntime does.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tvm
    from tvm import relax

# (op, its constructor in relax.op): every op here takes (data, weight, ..., out_dtype=...)
OPS = {
    "relax.matmul": "matmul",
    "relax.nn.conv1d": "nn.conv1d",
    "relax.nn.conv2d": "nn.conv2d",
    "relax.nn.conv3d": "nn.conv3d",
    "relax.nn.conv1d_transpose": "nn.conv1d_transpose",
    "relax.nn.conv2d_transpose": "nn.conv2d_transpose",
}


def _constructor(name: str) -> object:
    from tvm import relax

    fn: object = relax.op
    for part in OPS[name].split("."):
        fn = getattr(fn, part)
    return fn


def _rewrite(call: relax.Call, widen_weights: bool) -> relax.Expr | None:
    import tvm
    from tvm import relax

    if str(call.ty.dtype) != "float16":
        return None
    args = list(call.args)
    weight = args[1]
    if widen_weights:
        # a constant weight is converted once at compile time (a transposed one in the
        # kernel's weight prepack), not at every use inside the kernel's inner loop
        if isinstance(weight, tvm.ir.expr.Constant):
            args[1] = relax.const(weight.value.numpy().astype("float32"))
        else:
            args[1] = relax.op.astype(weight, "float32")
        args[0] = relax.op.astype(args[0], "float32")
    build = _constructor(call.op.name)
    params = inspect.signature(build).parameters  # type: ignore[arg-type]
    kwargs = {
        p: getattr(call.attrs, p)
        for p in params
        if p not in ("out_dtype",) and call.attrs is not None and hasattr(call.attrs, p)
    }
    wide = build(*args, **kwargs, out_dtype="float32")  # type: ignore[operator]
    return relax.op.astype(wide, "float16")


def Fp16Accumulate(widen_weights: bool = False) -> tvm.transform.Pass:
    """fp16 matmul / conv ops accumulate in fp32 and round their result to fp16 once.

    `widen_weights` (CPUs): a constant fp16 weight becomes an fp32 constant and the data is
    converted as it is read, so the kernel is an fp32 kernel. Converting the packed weight
    at every multiply-add held distilbert_fp16's 768x3072 matmul to 16 GFLOP/s."""
    from tvmflow.call_rewrite import call_rewrite_pass

    def rewrite(call: relax.Call) -> relax.Expr | None:
        return _rewrite(call, widen_weights)

    return call_rewrite_pass("Fp16Accumulate", [(op, 2) for op in OPS], rewrite=rewrite)
