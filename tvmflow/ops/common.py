"""Helpers shared by the converters: static shapes, constant inputs, subgraphs."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend
from tvm.relax.frontend.onnx.onnx_frontend import get_constant, onnx_input

Expr = Any


_DIMS = itertools.count()


def size_var(name: str) -> tvm.tirx.Var:
    """A new symbolic dim for a data-dependent size, named uniquely: fused kernels take such
    dims by name, and two of one name were confused ("conflicts with the value inferred")."""
    return tvm.tirx.Var(f"{name}_{next(_DIMS)}", "int64")


def first_along(bb: Any, x: Expr, axis: int, count: Expr, name: str) -> Expr:
    """x's first `count` (a run-time int64 tensor of one element) entries along `axis`, that
    dim typed as a new size variable (`size_var`): the outputs of NonZero, NMS and a TopK
    with a run-time k, trimmed to what the data selected. A dynamic slice (ends as a tensor):
    `strided_slice` with a symbolic end typed the result with an if_then_else dim that later
    passes could not re-type."""
    rank = len(x.ty.shape.values)
    along = np.zeros(rank, np.int64)
    along[axis] = 1
    dims = bb.emit(relax.op.shape_to_tensor(relax.op.shape_of(x)))
    count = bb.emit(relax.op.astype(relax.op.reshape(count, [1]), "int64"))
    ends = relax.op.add(
        relax.op.multiply(dims, relax.const(1 - along, "int64")),
        relax.op.multiply(count, relax.const(along, "int64")),
    )
    begin, step = relax.const(np.zeros(rank), "int64"), relax.const(np.ones(rank), "int64")
    kept = bb.emit(relax.op.dynamic_strided_slice(x, begin, ends, step))
    dims_out = list(x.ty.shape.values)
    dims_out[axis] = size_var(name)
    return bb.match_cast(kept, relax.TensorType(dims_out, x.ty.dtype))


def shape(x: Expr) -> list[int]:
    """The static shape of a Relax tensor expression."""
    return [int(v) for v in x.ty.shape.values]


def optional(inputs: Any, index: int) -> Expr | None:
    """Input `index`, or None when the node leaves it out."""
    return inputs[index] if len(inputs) > index and inputs[index] is not None else None


def constant(expr: Expr | None, params: Any, what: str) -> np.ndarray | None:
    """The value of a constant input (None when absent); refuses a computed one."""
    if expr is None:
        return None
    value = get_constant(expr, params)
    if not isinstance(value, tvm.ir.GenericConst):
        raise ValueError(f"{what} must be a constant (an initializer), not computed")
    return np.asarray(value.value.numpy())


def required(expr: Expr | None, params: Any, what: str) -> np.ndarray:
    """The value of a constant input the op cannot do without."""
    value = constant(expr, params, what)
    if value is None:
        raise ValueError(f"{what} is required")
    return value


def text(value: Any) -> str:
    """A string attribute (TVM's importer leaves them as bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def run_graph(
    bb: Any, graph: onnx.GraphProto, feeds: dict[str, Expr], params: Any, opset: int
) -> list[Expr]:
    """Convert `graph`'s nodes into `bb` with its inputs bound to `feeds`; its outputs.

    For ops whose attributes are graphs (Scan's body, FlexAttention's modifiers): the nodes
    go through the same converter table as the main graph at `opset` and see the outer
    graph's values (`params`, as converters receive them).
    """
    outer, weights = params
    graph = _with_constants(graph, outer, feeds)
    graph = static_graph(graph, {i.name: shape(feeds[i.name]) for i in graph.input}, opset)
    values: dict[str, Expr] = {**outer, **feeds}
    for init in graph.initializer:
        array = onnx.numpy_helper.to_array(init)
        values[init.name] = relax.const(array, str(array.dtype))  # (int64 stays int64)
    table = onnx_frontend._get_convert_map()
    for node in graph.node:
        if node.op_type == "If":  # TVM's importer converts If itself, outside its table
            values.update(_constant_if(bb, node, values, weights, opset))
            continue
        if node.op_type not in table:
            raise ValueError(f"subgraph {graph.name!r}: operator {node.op_type} has no converter")
        attr = onnx_frontend.ONNXGraphImporter._parse_attr(None, node.attribute)  # type: ignore[arg-type]
        attr["tvm_custom"] = {"name": node.name, "num_outputs": len(node.output)}
        inputs = onnx_input(values[name] if name else None for name in node.input)
        out = table[node.op_type].get_converter(opset)(bb, inputs, attr, [values, weights])
        if isinstance(out, relax.Expr) and not isinstance(out, relax.Tuple):
            out = bb.normalize(out)
            if isinstance(out.ty, relax.TupleType):
                out = relax.Tuple([relax.TupleGetItem(out, i) for i in range(len(out.ty.fields))])
        if isinstance(out, relax.Tuple):
            for name, item in zip(node.output, out.fields, strict=False):
                values[name] = bb.emit(item)
        else:
            values[node.output[0]] = out
    return [values[o.name] for o in graph.output]


def _constant_if(
    bb: Any, node: onnx.NodeProto, values: dict[str, Expr], weights: Any, opset: int
) -> dict[str, Expr]:
    """An If whose condition is known at import (in an unrolled body it often is: a test of
    the iteration number): the taken branch, converted in place."""
    cond = fold(bb, values[node.input[0]])
    if cond is None:
        raise ValueError("an If on run-time data inside a subgraph is not supported")
    taken = next(
        a.g for a in node.attribute if a.name == ("then_branch" if bool(cond) else "else_branch")
    )
    outputs = run_graph(bb, taken, {}, [values, weights], opset)
    return dict(zip(node.output, outputs, strict=True))


def _with_constants(
    graph: onnx.GraphProto, outer: dict[str, Expr], feeds: dict[str, Expr]
) -> onnx.GraphProto:
    """`graph` with the constants it reads as initializers, so onnxslim can fold them: the
    outer-scope ones (the frontend's onnxslim hoists a subgraph's constants into the main
    graph) and the constant feeds (a Loop's iteration number), whose inputs go."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    defined |= {name for node in graph.node for name in node.output}
    used = {name for node in graph.node for name in node.input if name}
    constants = {
        name: outer[name]
        for name in sorted(used - defined)
        if isinstance(outer.get(name), tvm.ir.GenericConst)
    }
    constants |= {
        name: value for name, value in feeds.items() if isinstance(value, tvm.ir.GenericConst)
    }
    if not constants:
        return graph
    copy = onnx.GraphProto()
    copy.CopyFrom(graph)
    kept = [i for i in copy.input if i.name not in constants]
    del copy.input[:]
    copy.input.extend(kept)
    copy.initializer.extend(
        onnx.numpy_helper.from_array(np.asarray(value.value.numpy()), name)
        for name, value in constants.items()
    )
    return copy


def static_graph(
    graph: onnx.GraphProto, shapes: dict[str, list[int]], opset: int
) -> onnx.GraphProto:
    """`graph` with its inputs at these static shapes, shape arithmetic folded by onnxslim
    (as the frontend does for the main graph: Shape → Range → mask becomes a constant).
    A graph that reads outer-scope values cannot stand alone: it is returned as it is."""
    fixed = tuple(sorted((name, tuple(dims)) for name, dims in shapes.items()))
    return _slimmed(graph.SerializeToString(), fixed, opset) or graph


@functools.lru_cache(maxsize=64)
def _slimmed(
    data: bytes, shapes: tuple[tuple[str, tuple[int, ...]], ...], opset: int
) -> onnx.GraphProto | None:
    import onnxslim

    graph = onnx.GraphProto()
    graph.ParseFromString(data)
    fixed = dict(shapes)
    for value in graph.input:
        if value.name in fixed:
            value.type.tensor_type.shape.Clear()
            for dim in fixed[value.name]:
                value.type.tensor_type.shape.dim.add().dim_value = dim
    for value in graph.output:  # the rank stays, the dims are inferred anew
        for dim in value.type.tensor_type.shape.dim:
            dim.Clear()
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    try:
        onnx.checker.check_model(model)
        slimmed = onnxslim.slim(model)
    except Exception:  # outer-scope names, or onnxslim's own limits: convert it unfolded
        return None
    return slimmed.graph if isinstance(slimmed, onnx.ModelProto) else None


_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relax.ceil": np.ceil,
    "relax.floor": np.floor,
    "relax.negative": np.negative,
    "relax.abs": np.abs,
    "relax.sqrt": np.sqrt,
    "relax.nn.relu": lambda a: np.maximum(a, 0),
    "relax.logical_not": np.logical_not,
}
_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
    "relax.floor_divide": np.floor_divide,
    "relax.less": np.less,
    "relax.greater": np.greater,
    "relax.equal": np.equal,
    "relax.logical_and": np.logical_and,
    "relax.logical_or": np.logical_or,
}


def fold(bb: Any, expr: Expr) -> np.ndarray | None:
    """The value of `expr` when it is small arithmetic on constants (a Loop's trip count
    computed from a Range's baked bounds), evaluated in numpy; None when it is not."""
    if isinstance(expr, tvm.ir.GenericConst):
        return np.asarray(expr.value.numpy())
    if isinstance(expr, relax.Var):
        bound = bb.lookup_binding(expr)
        return None if bound is None else fold(bb, bound)
    if not isinstance(expr, relax.Call) or not hasattr(expr.op, "name"):
        return None
    folded = [fold(bb, a) for a in expr.args]
    args = [a for a in folded if a is not None]
    if len(args) != len(folded):
        return None
    name, dtype = expr.op.name, str(expr.ty.dtype)
    if name == "relax.astype":
        return np.asarray(args[0]).astype(dtype)
    if name in _UNARY:
        return np.asarray(_UNARY[name](args[0])).astype(dtype)
    if name == "relax.divide":
        quotient = np.true_divide(args[0], args[1])
        return np.asarray(quotient if "float" in dtype else np.trunc(quotient)).astype(dtype)
    if name in _BINARY:
        return np.asarray(_BINARY[name](args[0], args[1])).astype(dtype)
    return None
