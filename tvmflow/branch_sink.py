"""Lowering passes: an If computes only the branch it takes, as fused kernels.

TVM's ONNX importer converts an If's two subgraphs into the enclosing block and keeps only
their results in the branches, so every call computes both branches and then picks one
(silero-vad v4 runs its whole 8 kHz and 16 kHz networks for each chunk). `SinkIntoBranches`
moves each pure binding that only one branch of one If needs (directly or through other such
bindings) into the start of that branch, in program order; bindings another If, the result or
any other binding also needs stay. FuseOps fuses only the dataflow blocks of a function's own
body, never those inside an If, so `LiftBranches` (right before FuseOps) then makes each
branch that computes something a call of a private function of its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm
    from tvm import relax

_ELSEWHERE = "elsewhere"  # a use outside every branch


def _used(expr: Any) -> list[Any]:
    from tvm import relax

    return list(relax.analysis.free_vars(expr))


def _movable(binding: relax.Binding) -> bool:
    from tvm import relax

    value = binding.value
    if isinstance(value, relax.If | relax.SeqExpr | relax.Function):
        return False
    if isinstance(binding, relax.MatchCast):
        return False  # it may define shape variables code outside the branch reads
    return not relax.analysis.contains_impure_call(value)


def _users(bindings: list[relax.Binding], later: set[Any]) -> dict[Any, set[Hashable]]:
    """Who uses each bound var: (If index, branch) pairs, or `_ELSEWHERE`."""
    from tvm import relax

    users: dict[Any, set[Hashable]] = defaultdict(set)
    for var in later:
        users[var].add(_ELSEWHERE)
    for index in reversed(range(len(bindings))):
        binding = bindings[index]
        value = binding.value
        if isinstance(value, relax.If):
            for var in _used(value.cond):
                users[var].add(_ELSEWHERE)
            for branch, seq in ((True, value.true_branch), (False, value.false_branch)):
                for var in _used(seq):
                    users[var].add((index, branch))
            continue
        # what this binding uses inherits its users; one nobody (or only impure code) uses
        # pins its inputs where they are
        mine = users.get(binding.var) if _movable(binding) else None
        for var in _used(value):
            users[var] |= mine or {_ELSEWHERE}
    return users


def _with_branches(
    binding: relax.Binding,
    then_seq: relax.Expr,
    else_seq: relax.Expr,
) -> relax.Binding:
    from tvm import relax

    return relax.VarBinding(binding.var, relax.If(binding.value.cond, then_seq, else_seq))


def _sink_block(block: relax.BindingBlock, later: set[Any]) -> relax.BindingBlock | None:
    """`block` with single-branch bindings moved into their branch; None if none moves."""
    from tvm import relax

    bindings = list(block.bindings)
    users = _users(bindings, later)
    moved: dict[Hashable, list[relax.Binding]] = defaultdict(list)
    kept: list[tuple[int, relax.Binding]] = []
    for index, binding in enumerate(bindings):
        owner = users.get(binding.var, set())
        if len(owner) == 1 and _ELSEWHERE not in owner and _movable(binding):
            moved[next(iter(owner))].append(binding)
        else:
            kept.append((index, binding))
    if not moved:
        return None
    out = []
    for index, binding in kept:
        if isinstance(binding.value, relax.If):
            then_seq = _prepend(binding.value.true_branch, moved.get((index, True), []))
            else_seq = _prepend(binding.value.false_branch, moved.get((index, False), []))
            binding = _with_branches(binding, then_seq, else_seq)
        out.append(binding)
    return relax.BindingBlock(out)


def _prepend(seq: relax.Expr, bindings: list[relax.Binding]) -> relax.Expr:
    from tvm import relax

    if not bindings:
        return seq
    if not isinstance(seq, relax.SeqExpr):
        return relax.SeqExpr([relax.BindingBlock(bindings)], seq)
    return relax.SeqExpr([relax.BindingBlock(bindings), *seq.blocks], seq.body)


def _top_level_ifs(
    func: relax.Function,
    rewrite: Callable[[relax.BindingBlock, set[Any]], relax.BindingBlock | None],
) -> relax.Function | None:
    """`func` with `rewrite` applied to each top-level binding block holding an If (given the
    vars the rest of the function uses), or None if it changed nothing."""
    from tvm import relax

    body = func.body
    if not isinstance(body, relax.SeqExpr):
        return None
    blocks = list(body.blocks)
    changed = False
    for n, block in enumerate(blocks):
        if isinstance(block, relax.DataflowBlock):  # no control flow inside one
            continue
        if not any(isinstance(b.value, relax.If) for b in block.bindings):
            continue
        later = set(_used(relax.SeqExpr(blocks[n + 1 :], body.body)))
        new = rewrite(block, later)
        if new is not None:
            blocks[n], changed = new, True
    if not changed:
        return None
    return relax.Function(
        func.params, relax.SeqExpr(blocks, body.body), func.ret_ty, func.is_pure, func.attrs
    )


def sink_function(func: relax.Function) -> relax.Function | None:
    """`func` with its branches' own work moved into them, or None if nothing moves."""
    return _top_level_ifs(func, _sink_block)


def lift_function(
    func: relax.Function, lift: Callable[[relax.SeqExpr], relax.Expr]
) -> relax.Function | None:
    """`func` with every If branch that binds something replaced by `lift(branch)`."""
    from tvm import relax

    def computes(seq: relax.Expr) -> bool:
        return isinstance(seq, relax.SeqExpr) and any(b.bindings for b in seq.blocks)

    def rewrite(block: relax.BindingBlock, _later: set[Any]) -> relax.BindingBlock | None:
        out, changed = [], False
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.If) and (
                computes(value.true_branch) or computes(value.false_branch)
            ):
                then_seq, else_seq = value.true_branch, value.false_branch
                then_seq = lift(then_seq) if computes(then_seq) else then_seq
                else_seq = lift(else_seq) if computes(else_seq) else else_seq
                binding, changed = _with_branches(binding, then_seq, else_seq), True
            out.append(binding)
        return relax.BindingBlock(out) if changed else None

    return _top_level_ifs(func, rewrite)


def _module_pass(
    name: str,
    per_function: Callable[[relax.Function, relax.BlockBuilder, str], relax.Function | None],
) -> tvm.transform.Pass:
    import tvm
    from tvm import relax

    def run(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        bb = relax.BlockBuilder(mod.clone())
        changed = False
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                new = per_function(func, bb, gv.name_hint)
                if new is not None:
                    bb.update_func(gv, new)
                    changed = True
        return relax.transform.Normalize()(bb.get()) if changed else mod

    return tvm.transform.module_pass(run, opt_level=0, name=name)


def SinkIntoBranches() -> tvm.transform.Pass:
    """Module pass: `sink_function` on every Relax function."""
    return _module_pass("SinkIntoBranches", lambda func, _bb, _name: sink_function(func))


def LiftBranches() -> tvm.transform.Pass:
    """Module pass: each computing If branch becomes a call of a new private function that
    takes what the branch uses (named after the caller: `main_branch`, `main_branch1`...)."""
    from tvm import relax
    from tvm.relax.utils import copy_with_new_vars

    def per_function(
        func: relax.Function, bb: relax.BlockBuilder, name: str
    ) -> relax.Function | None:
        def lift(seq: relax.SeqExpr) -> relax.Expr:
            params = _used(seq)
            args: list[relax.Expr] = list(params)
            body = relax.Function(params, seq, seq.body.ty, is_pure=True)
            dims = list(relax.analysis.free_symbolic_vars(body))
            if dims:  # shape variables the caller defines (data-dependent sizes): passed on
                params.append(relax.Var("dims", relax.ShapeType(dims)))
                args.append(relax.ShapeExpr(dims))
                body = relax.Function(params, seq, seq.body.ty, is_pure=True)
            callee = bb.add_func(copy_with_new_vars(body), f"{name}_branch")
            out = relax.Var("branch_out", seq.body.ty)
            call = relax.VarBinding(out, relax.Call(callee, args))
            return relax.SeqExpr([relax.BindingBlock([call])], out)

        return lift_function(func, lift)

    return _module_pass("LiftBranches", per_function)
