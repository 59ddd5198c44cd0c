"""Data-dependent values in TVM's importer: shape values converted, unknown dims typed.

Shape values read by ops that need tensors are converted, not refused.

TVM's importer keeps `Shape`'s result (and slices, gathers, concats of it) as a Relax shape
value, and refuses any node outside a fixed list of shape-aware ops that reads one ("Node ...
cannot handle ShapeExpr inputs"), although its own comment says such inputs are converted to
tensors. onnxslim folds shape arithmetic on static dims, so what reaches the importer is
arithmetic on data-dependent dims: torchvision's detectors take `min(k, candidates)` with
ReduceMin over a Shape after NonZero. Here every value a node outside that list reads is
converted with `shape_to_tensor` on the way in (an int64 tensor, what ONNX's Shape gives).

Converters of ops with data-dependent sizes (Slice or GatherND after NonZero, Reshape to a
computed shape) type their results with a rank but no dims, and legalizing the next op then
fails ("emit_te now only supports Tensor that has ShapeExpr shape"). `type_unknown_dims`
types each such value where it is bound, with a fresh symbolic dim per axis (a match_cast:
its sizes are bound at run time).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

# The ops TVM 0.27's importer lets read shape values (`_construct_nodes`), and `If`, which it
# handles itself.
SHAPE_AWARE = frozenset(
    {
        "Reshape",
        "Resize",
        "ConstantOfShape",
        "Gather",
        "Slice",
        "Shape",
        "Expand",
        "Concat",
        "Equal",
        "Where",
        "Cast",
        "CastLike",
        "Squeeze",
        "If",
    }
)


def tensor_reads(nodes: Iterable[Any]) -> frozenset[str]:
    """The value names some node outside `SHAPE_AWARE` reads, in branches too (an If's
    branches read the outer table)."""
    names: set[str] = set()
    for node in nodes:
        if node.op_type not in SHAPE_AWARE:
            names.update(name for name in node.input if name)
        for attr in node.attribute:
            for graph in [attr.g, *attr.graphs] if attr.HasField("g") else attr.graphs:
                names |= tensor_reads(graph.node)
    return frozenset(names)


class _Values(dict):  # type: ignore[type-arg]
    """The importer's value table: a shape value read under one of `names` comes out as a
    tensor (the shape-aware readers of the same value take tensors as well)."""

    def __init__(self, nodes: dict[str, Any], names: frozenset[str], bb: Any) -> None:
        super().__init__(nodes)
        self._names = names
        self._bb = bb

    def __getitem__(self, key: str) -> Any:
        from tvm import relax

        value = super().__getitem__(key)
        shape = isinstance(value, relax.Expr) and isinstance(value.ty, relax.ShapeType)
        if shape and key in self._names:
            value = self._bb.normalize(relax.op.shape_to_tensor(value))
        return value

    def get(self, key: str, default: Any = None) -> Any:  # what If branches read with
        return self[key] if key in self else default  # noqa: SIM401 (self[key] converts)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, _simplified(self._bb, value))

    def like(self, nodes: dict[str, Any]) -> _Values:
        """A table of `nodes` that converts and simplifies as this one does."""
        return _Values(nodes, self._names, self._bb)


# Data-dependent sizes are counts of elements: bounding them lets the simplifier drop the
# clamps slices put on them (`min(2**63 - 1, n)`, ONNX's "to the end"), which otherwise made
# broadcasting against `n` unprovable and the result's dims unknown.
_MAX_SIZE = 1 << 40


def _simplified(bb: Any, value: Any) -> Any:
    """`value`, match-cast to its dims simplified for sizes in [0, _MAX_SIZE] if that
    changes them (a run-time check of what the bound assumes)."""
    import tvm
    import tvm_ffi
    from tvm import relax
    from tvm.sym.analyzer import Analyzer, ConstIntBound

    if not isinstance(value, relax.Expr) or isinstance(value, relax.Tuple):
        return value
    ty = bb.normalize(value).ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return value
    dims = list(ty.shape.values)
    if all(isinstance(d, tvm.tirx.IntImm | tvm.tirx.Var) for d in dims):
        return value
    analyzer = Analyzer()
    for var in {v for d in dims for v in tvm.tirx.analysis.undefined_vars(d)}:
        analyzer.update(var, ConstIntBound(0, _MAX_SIZE), override=True)
    simple = [analyzer.simplify(d) for d in dims]
    if all(tvm_ffi.structural_equal(a, b) for a, b in zip(dims, simple, strict=True)):
        return value
    return bb.match_cast(value, relax.TensorType(simple, ty.dtype))


def install() -> None:
    """Wrap the importer's node loop (idempotent). Its If conversion restores the value
    table as a plain dict copy when a branch is done; the wrap restores ours around it."""
    from tvm.relax.frontend.onnx import onnx_frontend

    importer = onnx_frontend.ONNXGraphImporter
    current = importer._construct_nodes
    if getattr(current, "__wrapped__", None) is not None:
        return
    subgraph = importer._convert_subgraph

    @functools.wraps(current)
    def construct_nodes(self: Any, graph: Any) -> Any:
        self._nodes = _Values(self._nodes, tensor_reads(graph.node), self.bb)
        return current(self, graph)

    @functools.wraps(subgraph)
    def convert_subgraph(self: Any, bb: Any, graph: Any) -> Any:
        values = self._nodes
        try:
            return subgraph(self, bb, graph)
        finally:
            if isinstance(values, _Values) and not isinstance(self._nodes, _Values):
                self._nodes = values.like(self._nodes)

    importer._construct_nodes = construct_nodes
    importer._convert_subgraph = convert_subgraph


def type_unknown_dims(mod: Any) -> Any:
    """`mod` with each tensor of known rank but unknown dims (what converters' intermediate
    values and `If`s over data-dependent sizes are typed with) match-cast to symbolic dims
    where it is bound; the legalization of the ops that read it needs dims."""
    from tvm import relax

    from tvmflow.ops.common import size_var

    def unknown(ty: Any) -> bool:
        return isinstance(ty, relax.TensorType) and ty.shape is None and ty.ndim >= 0

    @relax.expr_functor.mutator
    class TypeDims(relax.PyExprMutator):  # type: ignore[misc]
        def visit_var_binding_(self, binding: Any) -> None:
            if not unknown(binding.var.ty):
                super().visit_var_binding_(binding)
                return
            bb = self.builder_
            raw = bb.emit(self.visit_expr(binding.value))
            ty = binding.var.ty
            dims = [size_var(f"dim{i}") for i in range(ty.ndim)]
            typed = bb.match_cast(raw, relax.TensorType(dims, ty.dtype))
            if not isinstance(binding.var, relax.DataflowVar) and bb.current_block_is_dataflow():
                typed = bb.emit_output(typed)
            self.set_var_remap(binding.var, typed)

    out = mod.clone()
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function) and any(
            unknown(b.var.ty) for block in func.body.blocks for b in block.bindings
        ):
            out[gv] = TypeDims(mod).visit_expr(func)
    return out
