"""Frontend pass: narrow dtypes (float8, float4, int4/int2) to 8-bit storage before TVM's import.

TVM cannot hold sub-byte tensors and miscasts float8, so compiled code holds these dtypes in
storage dtypes (`tvmflow.dtypes`). This pass retypes the graph's inputs, outputs, values,
initializers and constant attributes to storage, and notes on each converting node
(`NOTED_OPS`) the real dtypes of its inputs (`tvmflow_types`), which tvmflow's converters
read. Ops that only move data (Reshape, Transpose, ...) work on storage unchanged. A model
without narrow dtypes is returned as it is. String tensors cannot exist in compiled code at
all: they are refused here, as unsupported, with the op named.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from tvmflow import dtypes
from tvmflow.errors import TvmflowError
from tvmflow.ops.cast import TYPES_ATTR, onnx_dtype

log = logging.getLogger(__name__)

NOTED_OPS = ("BitCast", "Cast", "CastLike", "QuantizeLinear", "DequantizeLinear")


# ONNX elem types of the narrow dtypes
NARROW = frozenset(
    onnx.helper.np_dtype_to_tensor_dtype(dtypes.numpy_dtype(name)) for name in dtypes.STORAGE
)


def _is_narrow(elem_type: int) -> bool:
    return elem_type in NARROW


def _storage_elem(elem_type: int) -> int:
    storage = dtypes.storage_dtype(onnx_dtype(elem_type))
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(storage))


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """`graph` and every subgraph (If branches, Loop and Scan bodies), outermost first."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found += _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    found += _graphs(sub)
    return found


def value_types(proto: onnx.ModelProto) -> dict[str, int]:
    """Every named tensor's ONNX elem type, from the graph and ONNX's type inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception as exc:  # inference gaps only lose notes on values it could not type
        log.debug("type inference failed (%s); using declared types", exc)
        inferred = proto
    types: dict[str, int] = {}
    for graph in _graphs(inferred.graph):
        types.update({init.name: init.data_type for init in graph.initializer})
        for value in [*graph.input, *graph.output, *graph.value_info]:
            if value.type.HasField("tensor_type"):
                types[value.name] = value.type.tensor_type.elem_type
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                    types[node.output[0]] = attr.t.data_type
    return types


def _check_no_strings(proto: onnx.ModelProto, types: dict[str, int]) -> None:
    for graph in _graphs(proto.graph):
        for node in graph.node:
            names = [n for n in [*node.input, *node.output] if n]
            strings = [n for n in names if types.get(n) == onnx.TensorProto.STRING]
            if strings:
                raise TvmflowError(
                    f"unsupported dtype: {node.op_type} on string tensors ({strings[0]!r}); "
                    "compiled code holds numbers only: do string work outside the model"
                )


def _stored(tensor: onnx.TensorProto) -> onnx.TensorProto:
    array = dtypes.to_storage(numpy_helper.to_array(tensor))
    return numpy_helper.from_array(np.ascontiguousarray(array), tensor.name)


def _declared_types(proto: onnx.ModelProto) -> set[int]:
    """Every elem type the graph names without inference: where narrow or string values start
    (inputs, initializers, constants, a Cast's `to`, a QuantizeLinear's `output_dtype`)."""
    found: set[int] = set()
    for graph in _graphs(proto.graph):
        found.update(init.data_type for init in graph.initializer)
        for value in [*graph.input, *graph.output, *graph.value_info]:
            found.add(value.type.tensor_type.elem_type)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    found.add(attr.t.data_type)
                elif attr.type == onnx.AttributeProto.INT and attr.name in ("to", "output_dtype"):
                    found.add(attr.i)
    return found


def _store_graph(graph: onnx.GraphProto, types: dict[str, int]) -> None:
    """Retype one graph (not its subgraphs) in place, noting converting nodes' input dtypes."""
    for node in graph.node:
        if node.op_type in NOTED_OPS:
            noted = [types.get(name, 0) if name else 0 for name in node.input]
            noted = [t if _is_narrow(t) else 0 for t in noted]
            if any(noted):
                node.attribute.append(onnx.helper.make_attribute(TYPES_ATTR, noted))
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and _is_narrow(attr.t.data_type):
                attr.t.CopyFrom(_stored(attr.t))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        tensor_type = value.type.tensor_type
        if value.type.HasField("tensor_type") and _is_narrow(tensor_type.elem_type):
            tensor_type.elem_type = _storage_elem(tensor_type.elem_type)
    for init in graph.initializer:
        if _is_narrow(init.data_type):
            init.CopyFrom(_stored(init))


def store_narrow(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `proto` with narrow dtypes in storage and notes on converting nodes."""
    declared = _declared_types(proto)
    if not any(_is_narrow(t) or t == onnx.TensorProto.STRING for t in declared):
        return proto  # the usual model: no type inference, no copy
    types = value_types(proto)
    _check_no_strings(proto, types)
    if not any(_is_narrow(t) for t in types.values()):
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for graph in _graphs(out.graph):
        _store_graph(graph, types)
    return out


def real_dtype(stored: str, elem_type: int) -> str:
    """A graph output's dtype for callers: the declared narrow dtype where it is held in storage."""
    if _is_narrow(elem_type) and dtypes.storage_dtype(onnx_dtype(elem_type)) == stored:
        return onnx_dtype(elem_type)
    return stored
