"""Intermediates in one arena: planned tensors packed at offsets by their lifetimes.

Relax's StaticPlanBlockMemory gives each intermediate tensor a storage and reuses a storage
only whole, for a later tensor that fits in it. A network whose largest tensors come early
keeps that storage to the end beside smaller ones: MobileNetV2 at batch 8 holds 66 MiB of
storages where at most 46 MiB are live at once. `ArenaPlan`, run right after it, keeps its
decisions of *which* tensors are planned and replaces *where* they go: one storage (the
arena) per function, each tensor at a 64-byte aligned offset, tensors whose lifetimes overlap
never sharing a byte. Offsets come from greedy-by-size placement (largest first, into the
smallest gap that fits among the tensors it overlaps in time), which lands near the peak of
live bytes on CNNs. A function it cannot analyse fully (branches, a planned tensor that
reaches the return value, symbolic shapes, storages used other than by alloc_tensor) is left
as StaticPlanBlockMemory planned it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm
    from tvm import relax

ALIGNMENT = 64  # TVM's kAllocAlignment: every tensor's data starts on a 64-byte boundary
_ALLOC_STORAGE = "relax.memory.alloc_storage"
_ALLOC_TENSOR = "relax.memory.alloc_tensor"


@dataclass(frozen=True)
class Interval:
    """One planned tensor: its bytes (aligned) and the bindings [first, last] it is live."""

    size: int
    first: int
    last: int


def pack(tensors: list[Interval], shuffles: int = 32) -> tuple[list[int], int]:
    """Offsets for `tensors` (same order) and the arena size: best-fit placement in a few
    orders (largest first, longest-lived first, biggest size x lifetime first, program order)
    and `shuffles` seeded random ones; the smallest arena wins (the problem is NP-hard;
    these reach the peak of live bytes on the reference CNNs)."""
    n = len(tensors)
    keys = (
        lambda i: (-tensors[i].size, tensors[i].first),
        lambda i: (-(tensors[i].last - tensors[i].first), -tensors[i].size),
        lambda i: (-tensors[i].size * (tensors[i].last - tensors[i].first + 1), tensors[i].first),
        lambda i: (tensors[i].first, -tensors[i].size),
    )
    orders = [sorted(range(n), key=key) for key in keys]
    rng = random.Random(0)
    orders += [rng.sample(range(n), n) for _ in range(shuffles)]
    return min((_place(tensors, order) for order in orders), key=lambda r: r[1])


def _place(tensors: list[Interval], order: list[int]) -> tuple[list[int], int]:
    """Place tensors in `order`, each at the smallest gap that fits among the tensors already
    placed that are live at the same time (else above them all)."""
    offsets: dict[int, int] = {}
    for i in order:
        t = tensors[i]
        busy = sorted(
            (off, off + tensors[j].size)
            for j, off in offsets.items()
            if tensors[j].first <= t.last and t.first <= tensors[j].last
        )
        best, best_gap, cursor = None, math.inf, 0
        for start, end in busy:
            gap = start - cursor
            if t.size <= gap < best_gap:
                best, best_gap = cursor, gap
            cursor = max(cursor, end)
        offsets[i] = cursor if best is None else best
    placed = [offsets[i] for i in range(len(tensors))]
    size = max((o + t.size for o, t in zip(placed, tensors, strict=True)), default=0)
    return placed, size


def _aligned(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _op_name(value: Any) -> str:
    import tvm
    from tvm import relax

    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return str(value.op.name)
    return ""


def _vars_in(expr: Any) -> set[Any]:
    from tvm import relax

    found: set[Any] = set()
    relax.analysis.post_order_visit(
        expr, lambda e: found.add(e) if isinstance(e, relax.Var) else None
    )
    return found


def _tensor_bytes(var: Any) -> int | None:
    """Bytes of the tensor an alloc_tensor binds to `var`; None unless its shape is static."""
    import tvm
    from tvm import relax

    ty = var.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = ty.shape.values if isinstance(ty.shape, relax.ShapeExpr) else None
    if dims is None or not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    dtype = tvm.DataType(str(ty.dtype))
    return (math.prod(int(d) for d in dims) * dtype.bits * dtype.lanes + 7) // 8


def plan_function(func: relax.Function) -> relax.Function | None:
    """`func` with its planned tensors in one arena, or None to leave it as it is."""
    from tvm import relax

    body = func.body
    if not isinstance(body, relax.SeqExpr):
        return None
    bindings = [b for block in body.blocks for b in block.bindings]
    if any(isinstance(b, relax.MatchCast) for b in bindings):
        return None
    storages: dict[Any, Any] = {}  # storage var -> its alloc_storage call
    tensor_of: dict[Any, int] = {}  # planned tensor var -> its index in `intervals`
    owners: dict[Any, set[int]] = {}  # var -> planned tensors it may alias
    intervals: list[list[int]] = []  # [size, first, last]
    for index, binding in enumerate(bindings):
        value = binding.value
        if isinstance(value, relax.If | relax.SeqExpr | relax.Function):
            return None
        used = _vars_in(value)
        name = _op_name(value)
        if name == _ALLOC_STORAGE:
            storages[binding.var] = value
            continue
        if name == _ALLOC_TENSOR and value.args[0] in storages:
            size = _tensor_bytes(binding.var)
            offset = value.args[1]
            if size is None or getattr(offset, "value", None) != 0:
                return None  # symbolic, or placed inside its storage already
            tensor_of[binding.var] = len(intervals)
            owners[binding.var] = {len(intervals)}
            intervals.append([_aligned(max(size, 1)), index, index])
            continue
        if used & storages.keys():
            return None  # a storage used other than by alloc_tensor (kill_storage, ...)
        aliased: set[int] = set()
        for var in used:
            for t in owners.get(var, ()):
                intervals[t][2] = index
                aliased.add(t)
        if aliased:  # conservatively, whatever a binding computes from a tensor may view it
            owners[binding.var] = aliased
    if not intervals or _vars_in(body.body) & owners.keys():
        return None
    scopes = {(str(c.args[1]), str(c.args[2])) for c in storages.values()}
    if len(scopes) != 1:
        return None
    offsets, size = pack([Interval(s, f, last) for s, f, last in intervals])
    if size >= planned_bytes(func):
        return None  # StaticPlanBlockMemory's storages are no bigger: keep them
    first_storage = next(iter(storages.values()))
    arena = relax.Var("arena", next(iter(storages)).ty)
    alloc = relax.op.memory.alloc_storage(
        relax.ShapeExpr([size]), first_storage.args[1], first_storage.args[2], "uint8"
    )
    blocks = []
    for n, block in enumerate(body.blocks):
        new: list[relax.Binding] = [relax.VarBinding(arena, alloc)] if n == 0 else []
        for binding in block.bindings:
            if binding.var in storages:
                continue
            if binding.var in tensor_of:
                # the kernels take no byte_offset: ensure_zero_offset moves it into the data
                # pointer (a view on CPUs, as the offsets are 64-byte aligned)
                call = binding.value
                placed = relax.Var(f"{binding.var.name}_at", binding.var.ty)
                value = relax.op.memory.alloc_tensor(
                    arena, offsets[tensor_of[binding.var]], call.args[2], call.args[3], call.args[4]
                )
                new.append(relax.VarBinding(placed, value))
                binding = relax.VarBinding(binding.var, relax.op.memory.ensure_zero_offset(placed))
            new.append(binding)
        blocks.append(relax.BindingBlock(new))
    return relax.Function(
        func.params, relax.SeqExpr(blocks, body.body), func.ret_ty, func.is_pure, func.attrs
    )


def planned_bytes(func: relax.Function) -> int:
    """Bytes of the storages `func` allocates statically (what its intermediates hold)."""
    import tvm
    from tvm import relax

    total = 0
    for block in func.body.blocks if isinstance(func.body, relax.SeqExpr) else []:
        for binding in block.bindings:
            if _op_name(binding.value) == _ALLOC_STORAGE:
                shape = binding.value.args[0]
                if isinstance(shape, relax.ShapeExpr):
                    total += sum(int(d) for d in shape.values if isinstance(d, tvm.tirx.IntImm))
    return total


def arena_plan() -> tvm.transform.Pass:
    """The module pass: every Relax function `plan_function` can plan gets its arena."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="ArenaPlan")
    def run(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                planned = plan_function(func)
                if planned is not None:
                    out[gv] = planned
        return out

    return run  # type: ignore[no-any-return]


def build_pipeline() -> tvm.transform.Pass:
    """TVM 0.27's `relax.pipeline.default_build_pipeline` with `arena_plan` right after
    StaticPlanBlockMemory (what `tvm.compile` runs on CPU targets)."""
    import tvm
    from tvm.relax import backend, transform

    return tvm.transform.Sequential(
        [
            backend.DispatchSampling(),
            backend.DispatchSortScan(),
            transform.LegalizeOps(),
            transform.RewriteDataflowReshape(),
            transform.ToNonDataflow(),
            transform.RemovePurityChecking(),
            transform.CallTIRRewrite(),
            transform.StaticPlanBlockMemory(),
            arena_plan(),
            transform.RewriteCUDAGraph(),
            transform.LowerAllocTensor(),
            transform.KillAfterLastUse(),
            transform.LowerRuntimeBuiltin(),
            transform.ComputePrimValue(),
            transform.VMShapeLower(),
            transform.AttachGlobalSymbol(),
        ]
    )
