"""Frontend: an ONNX file on disk → a checked, shape-fixed ONNX graph → a Relax IRModule.

Real exported models carry Shape→Gather→Reshape chains that TVM's importer cannot follow;
once every input shape is fixed, onnxslim folds them into constants, so we always slim.
"""

from __future__ import annotations

import collections
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper

from tvmflow.errors import ImporterError, TvmflowError
from tvmflow.manifest import FrozenInput, TensorSpec, sha256_file

if TYPE_CHECKING:
    import tvm

log = logging.getLogger(__name__)

# Domains TVM's ONNX importer understands; anything else is reported as unsupported.
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class ImportedModel:
    """An ONNX model with every input shape fixed and shape computations folded; `frozen`
    inputs are constants in `proto` (not in `inputs`), fed to onnxruntime when it checks."""

    path: Path
    sha256: str
    proto: onnx.ModelProto
    inputs: tuple[TensorSpec, ...]
    opset: int
    frozen: tuple[FrozenInput, ...] = ()

    def reference_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`feeds` plus the frozen inputs: what the original ONNX file takes."""
        return {**feeds, **{f.spec.name: f.array() for f in self.frozen}}

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {spec.name: spec.shape for spec in self.inputs}


FreezeValue = str | float | int | bool | Sequence[float] | np.ndarray


def load_onnx(
    path: Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    freeze: Mapping[str, FreezeValue] | None = None,
) -> ImportedModel:
    """Read, check and shape-fix an ONNX model; every problem is a one-line TvmflowError.

    `freeze` makes inputs constants before folding (`--freeze sr=16000`), so that branches on
    them (an `If` on a sample rate) fold away instead of reaching TVM's importer."""
    path = Path(path)
    proto = _read(path)
    shapes = dict(input_shapes or {})
    frozen = _freeze_inputs(proto, dict(freeze or {}), shapes)
    inputs = _fix_input_shapes(
        proto, {k: v for k, v in shapes.items() if k not in freeze_names(frozen)}
    )
    proto = _fold_shapes(proto, inputs)
    _check_supported(proto)
    return ImportedModel(path, sha256_file(path), proto, inputs, _default_opset(proto), frozen)


def freeze_names(frozen: Sequence[FrozenInput]) -> set[str]:
    return {f.spec.name for f in frozen}


def _freeze_inputs(
    proto: onnx.ModelProto, freeze: dict[str, FreezeValue], shapes: Mapping[str, Sequence[int]]
) -> tuple[FrozenInput, ...]:
    """Turn each frozen graph input into an initializer holding its value (in place)."""
    by_name = {i.name: i for i in _graph_inputs(proto)}
    unknown = sorted(set(freeze) - set(by_name))
    if unknown:
        raise TvmflowError(
            f"--freeze names unknown input(s) {', '.join(unknown)}; "
            f"the model's inputs are {', '.join(by_name)}"
        )
    frozen = []
    for name, value in freeze.items():
        spec = _frozen_spec(by_name[name], value, shapes.get(name))
        frozen.append(FrozenInput(spec, _frozen_values(spec, value)))
        proto.graph.input.remove(by_name[name])
        tensor = numpy_helper.from_array(frozen[-1].array(), name)
        proto.graph.initializer.append(tensor)
    return tuple(frozen)


def _value_text(value: FreezeValue) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",")] if value.strip() else []
    return [str(v) for v in np.asarray(value).reshape(-1).tolist()]


def _frozen_spec(
    value_info: onnx.ValueInfoProto, value: FreezeValue, given: Sequence[int] | None
) -> TensorSpec:
    """The frozen input's dtype and shape: --input-shape, else the declared static shape, else
    (rank 1, dynamic) as many elements as the value has."""
    name = value_info.name
    tensor_type = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type"):
        raise TvmflowError(f"--freeze {name}: the input is not a tensor; tvmflow freezes tensors")
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
    count = len(_value_text(value))
    dims = list(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
    if given is not None:
        shape = tuple(int(d) for d in given)
    elif dims is not None and all(d.dim_value > 0 for d in dims):
        shape = tuple(int(d.dim_value) for d in dims)
    elif dims is not None and len(dims) == 1:
        shape = (count,)
    else:
        raise TvmflowError(
            f"--freeze {name}: the input's shape is not fixed; give it with --input-shape "
            f"{name}=D1,D2,..."
        )
    if count != math.prod(shape):
        raise TvmflowError(
            f"--freeze {name}: {count} value(s) given, the input "
            f"{TensorSpec(name, shape, dtype).describe()} holds {math.prod(shape)}; give "
            f"them comma-separated (e.g. --freeze {name}=16000)"
        )
    return TensorSpec(name, shape, dtype)


def _frozen_values(spec: TensorSpec, value: FreezeValue) -> tuple[float | int | bool, ...]:
    """Parse each element in the input's dtype, refusing what the dtype cannot hold exactly."""
    dtype = np.dtype(spec.dtype)
    parsed: list[float | int | bool] = []
    for text in _value_text(value):
        try:
            if dtype.kind == "b":
                if text.lower() not in ("0", "1", "true", "false"):
                    raise ValueError(text)
                parsed.append(text.lower() in ("1", "true"))
            elif dtype.kind in "iu":
                number = float(text)
                if not number.is_integer():
                    raise ValueError(text)
                info = np.iinfo(dtype)
                if not info.min <= int(number) <= info.max:
                    raise ValueError(text)
                parsed.append(int(number))
            elif dtype.kind == "f":
                parsed.append(float(text))
            else:
                raise TvmflowError(f"--freeze {spec.name}: cannot freeze an input of {dtype}")
        except ValueError:
            raise TvmflowError(
                f"--freeze {spec.name}={text!r} is not a valid {dtype.name} value (input "
                f"{spec.describe()}); give numbers, e.g. --freeze {spec.name}=16000"
            ) from None
    return tuple(parsed)


def read_graph(path: Path) -> onnx.ModelProto:
    """The model's graph without its external weights (cheap: enough to read signatures)."""
    if not path.is_file():
        raise TvmflowError(f"model file {path} does not exist")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise TvmflowError(f"{path} is not an ONNX model ({type(exc).__name__}: {exc})") from exc


def _read(path: Path) -> onnx.ModelProto:
    proto = read_graph(path)
    _check_graph(proto, path)
    _check_external_data(proto, path.parent)
    try:
        external_data_helper.load_external_data_for_model(proto, str(path.parent))
    except OSError as exc:
        raise TvmflowError(f"{path}: cannot read external weights ({exc})") from exc
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise TvmflowError(f"{path} fails the ONNX checker: {first}") from exc
    return proto


def _check_graph(proto: onnx.ModelProto, path: Path) -> None:
    """What onnxruntime and TVM would otherwise fail on deep inside: outputs, opset."""
    if not proto.graph.output:
        raise TvmflowError(
            f"{path} has no graph outputs, so there is nothing to compute; re-export it"
        )
    newest = onnx.defs.onnx_opset_version()
    opset = _default_opset(proto)
    if opset > newest:
        raise TvmflowError(
            f"{path} uses ONNX opset {opset}, newer than the newest this tvmflow knows "
            f"({newest}, onnx {onnx.__version__}); re-export it with opset <= {newest}"
        )


def _check_external_data(proto: onnx.ModelProto, base: Path) -> None:
    """Each external-data tensor must lie in a file inside the model's folder (no path
    traversal) that holds all the bytes the tensor claims."""
    root = base.resolve()
    for tensor in external_data_helper._get_all_tensors(proto):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        target = (root / info.location).resolve()
        if not target.is_relative_to(root):
            raise TvmflowError(
                f"tensor {tensor.name!r} points to external data {info.location!r} outside the "
                f"model's folder {root}; move the data file next to the model"
            )
        if not target.is_file():
            raise TvmflowError(
                f"tensor {tensor.name!r} keeps its data in {target}, which does not exist; copy "
                "the model's external data file(s) next to it"
            )
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        needed = (info.offset or 0) + (info.length or math.prod(tensor.dims) * dtype.itemsize)
        have = target.stat().st_size
        if have < needed:
            raise TvmflowError(
                f"external data file {target} holds {have} bytes, but tensor {tensor.name!r} "
                f"needs bytes up to {needed}: the file is truncated or from another export; "
                "copy it again"
            )


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def _fix_input_shapes(
    proto: onnx.ModelProto, user: dict[str, Sequence[int]]
) -> tuple[TensorSpec, ...]:
    graph_inputs = _graph_inputs(proto)
    names = [i.name for i in graph_inputs]
    unknown = sorted(set(user) - set(names))
    if unknown:
        raise TvmflowError(
            f"--input-shape names unknown input(s) {', '.join(unknown)}; "
            f"the model's inputs are {', '.join(names)}"
        )
    specs = []
    for value in graph_inputs:
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise TvmflowError(
                f"input {value.name!r} is not a tensor; tvmflow compiles tensors only"
            )
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        if np.dtype(dtype).kind in "OSU":
            raise TvmflowError(
                f"unsupported dtype: input {value.name!r} is a string tensor; tvmflow compiles "
                "numeric and bool tensors only: move the string handling (tokenizing, parsing) "
                "out of the model"
            )
        if not tensor_type.HasField("shape"):
            shape = _unknown_rank_shape(value.name, user.get(value.name))
        else:
            shape = _input_shape(value.name, list(tensor_type.shape.dim), user.get(value.name))
        specs.append(TensorSpec(value.name, shape, dtype))
    _check_input_sizes(specs)
    return tuple(specs)


def _check_input_sizes(specs: Sequence[TensorSpec]) -> None:
    """Refuse inputs larger than this machine's memory now, not after a long build."""
    import psutil

    memory = psutil.virtual_memory().total
    for spec in specs:
        size = math.prod(spec.shape) * np.dtype(spec.dtype).itemsize
        if size > memory:
            raise TvmflowError(
                f"input {spec.describe()} would take {size} bytes ({size / 2**30:.3g} GiB), more "
                f"than this machine's {memory / 2**30:.3g} GiB of memory; give a smaller "
                f"--input-shape {spec.name}=..."
            )


def _input_shape(
    name: str, dims: Sequence[onnx.TensorShapeProto.Dimension], given: Sequence[int] | None
) -> tuple[int, ...]:
    flag = f"--input-shape {name}=" + ",".join(
        str(d.dim_value) if d.dim_value > 0 else (d.dim_param or "?") for d in dims
    )
    if given is not None:
        given = tuple(int(d) for d in given)
        if len(given) != len(dims) or any(g <= 0 for g in given):
            raise TvmflowError(
                f"--input-shape for {name!r} has {len(given)} positive dims expected {len(dims)} "
                f"(the model declares {flag.split('=', 1)[1] or 'a scalar: ' + flag})"
            )
        for axis, (dim, value) in enumerate(zip(dims, given, strict=True)):
            if dim.dim_value > 0 and dim.dim_value != value:
                raise TvmflowError(
                    f"--input-shape gives {name!r} dim {axis} = {value}, but the model fixes it "
                    f"to {dim.dim_value}"
                )
        return given
    for axis, dim in enumerate(dims):
        if dim.dim_value <= 0:
            label = f" ({dim.dim_param!r})" if dim.dim_param else ""
            raise TvmflowError(
                f"input {name!r} has dynamic dim {axis}{label}; fix it with {flag} "
                "(replace the symbolic dims with numbers)"
            )
    return tuple(int(d.dim_value) for d in dims)


def _unknown_rank_shape(name: str, given: Sequence[int] | None) -> tuple[int, ...]:
    """An input declared without any shape: only the user can say what it is."""
    if given is None or any(int(g) <= 0 for g in given):
        raise TvmflowError(
            f"input {name!r} has no declared shape (unknown rank); give it with "
            f"--input-shape {name}=D1,D2,... (--input-shape {name}= for a scalar)"
        )
    return tuple(int(g) for g in given)


def _fold_shapes(proto: onnx.ModelProto, inputs: tuple[TensorSpec, ...]) -> onnx.ModelProto:
    """Pin input shapes and let onnxslim fold shape arithmetic and dead nodes.

    onnxslim's pattern fusions can drop a node whose output is still read (0.1.98's MatMul+Mul
    fusion on a Whisper decoder step's attention scaling): such a graph is folded again
    without fusions, and imported unfolded if that is broken too."""
    import onnxslim

    # scalars are static already (and onnxslim cannot parse an empty shape)
    shapes = [f"{spec.name}:{','.join(map(str, spec.shape))}" for spec in inputs if spec.shape]
    for skip in ([], ["graph_fusion"]):
        try:
            slimmed = onnxslim.slim(proto, input_shapes=shapes or None, skip_optimizations=skip)
        except Exception as exc:  # onnxslim bugs must not block a model TVM may import as is
            log.warning("onnxslim could not simplify the model (%s); importing it unfolded", exc)
            return proto
        if not isinstance(slimmed, onnx.ModelProto):  # pragma: no cover - defensive
            return proto
        undefined = _undefined_input(slimmed.graph, set())
        if undefined is None:
            return slimmed
        log.warning("onnxslim left node input %r undefined%s", undefined, _RETRY[bool(skip)])
    return proto


_RETRY = {False: "; folding again without fusions", True: "; importing the model unfolded"}


def _undefined_input(graph: onnx.GraphProto, outer: set[str]) -> str | None:
    """The first node input that nothing before it defines (in this graph or, for a
    subgraph, its enclosing scopes), or None when the graph is well formed."""
    known = outer | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    known |= {t.name for t in graph.sparse_initializer}
    for node in graph.node:
        for name in node.input:
            if name and name not in known:
                return name
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                missing = _undefined_input(sub, known)
                if missing is not None:
                    return missing
        known.update(node.output)
    return None


def _default_opset(proto: onnx.ModelProto) -> int:
    for opset in proto.opset_import:
        if opset.domain in _DEFAULT_DOMAINS:
            return int(opset.version)
    return 1


def _iter_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.extend(_iter_nodes(attr.g))
    return nodes


def _check_supported(proto: onnx.ModelProto) -> None:
    """List every operator TVM cannot import, with counts, instead of failing on the first."""
    from tvmflow import ops

    opsets = {o.domain: o.version for o in proto.opset_import}
    missing: collections.Counter[tuple[str, str]] = collections.Counter()
    first: dict[tuple[str, str], str] = {}
    for node in _iter_nodes(proto.graph):
        key = (node.domain or "", node.op_type)
        domain = "" if key[0] in _DEFAULT_DOMAINS else key[0]
        if node.op_type in ("Constant", "If") and domain == "":
            continue
        if ops.supports(domain, node.op_type, opsets.get(key[0], _default_opset(proto))):
            continue
        missing[key] += 1
        first.setdefault(key, node.name or "<unnamed>")
    if missing:
        parts = [
            f"{op} (domain {domain or 'ai.onnx'!r}, opset {opsets.get(domain, '?')}) "
            f"x{count}, first at node {first[(domain, op)]!r}"
            for (domain, op), count in sorted(missing.items())
        ]
        raise TvmflowError(
            "unsupported operators: " + "; ".join(parts) + ". Replace them before export "
            "(or export with a lower opset / without custom domains)"
        )


def to_relax(model: ImportedModel) -> tvm.IRModule:
    """Import the shape-fixed graph into Relax with weights as embedded constants."""
    from tvmflow import ops
    from tvmflow.narrow import store_narrow
    from tvmflow.ops.cast import TYPES_ATTR

    ops.install()  # tvmflow's converters for ops TVM's importer lacks or gets wrong
    proto = store_narrow(model.proto)  # float8/float4/int4 as 8-bit storage (tvmflow.dtypes)
    with warnings.catch_warnings():
        if proto is not model.proto:  # checked as the user gave it; the notes are not ONNX's
            warnings.filterwarnings("ignore", f".*{TYPES_ATTR}", UserWarning)
        return _import(model, proto)


def _import(model: ImportedModel, proto: onnx.ModelProto) -> tvm.IRModule:
    from tvm.relax.frontend.onnx import from_onnx

    from tvmflow import dtypes
    from tvmflow.ops.dynamic_values import type_unknown_dims

    try:
        mod = from_onnx(
            proto,
            shape_dict={s.name: list(s.shape) for s in model.inputs},
            dtype_dict={s.name: dtypes.storage_dtype(s.dtype) for s in model.inputs},
            opset=model.opset,
            keep_params_in_input=False,
            sanitize_input_names=False,
        )
    except TvmflowError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        first = first.replace(_TVM_META_NOTE, "").strip()
        raise ImporterError(
            f"TVM's ONNX importer failed on {model.path.name}: {first[:300]}"
            f"{_freeze_hint(model.proto)}"
        ) from exc
    return tensor_outputs(type_unknown_dims(mod))


_TVM_META_NOTE = "# Metadata omitted. Use show_meta=True in script() method to show it."


def _freeze_hint(proto: onnx.ModelProto) -> str:
    """An `If` that survived folding branches on a runtime input; TVM's importer builds both
    branches, and one may not type-check at the given shapes. Freezing the input folds it."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    inputs = {i.name: i for i in proto.graph.input}
    names: list[str] = []
    for node in proto.graph.node:
        if node.op_type != "If":
            continue
        stack, seen = [node.input[0]], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in inputs and name not in names:
                names.append(name)
            if name in producers:
                stack.extend(i for i in producers[name].input if i)
    small = [n for n in names if _is_scalar_like(inputs[n])]
    if not small:  # an image or a sequence: freezing it would fold the model to one answer
        return ""
    flags = " ".join(f"--freeze {n}=VALUE" for n in small)
    return (
        f"; the model branches (If) on input(s) {', '.join(small)}: compile with {flags} to "
        "fold the branch away"
    )


def _is_scalar_like(value: onnx.ValueInfoProto) -> bool:
    """A flag-sized input (a sample rate, a mode): a static shape of at most 16 values."""
    dims = value.type.tensor_type.shape.dim
    return all(d.dim_value > 0 for d in dims) and math.prod(d.dim_value for d in dims) <= 16


def tensor_outputs(mod: tvm.IRModule) -> tvm.IRModule:
    """`main` with every output a tensor: TVM's importer returns a Shape node's result as a
    Relax shape value (what its other converters consume), but an ONNX output is an int64
    tensor."""
    from tvm import relax

    func = mod["main"]
    seq = func.body
    ret = seq.body
    fields = list(ret.fields) if isinstance(ret, relax.Tuple) else [ret]
    if not any(isinstance(f.ty, relax.ShapeType) for f in fields):
        return mod
    bb = relax.BlockBuilder()
    bindings, outputs = [], []
    for i, field in enumerate(fields):
        if isinstance(field.ty, relax.ShapeType):
            call = bb.normalize(relax.op.shape_to_tensor(field))
            field_var = relax.Var(f"shape_output{i}", call.ty)
            bindings.append(relax.VarBinding(field_var, call))
            field = field_var
        outputs.append(field)
    new_ret = bb.normalize(relax.Tuple(outputs)) if isinstance(ret, relax.Tuple) else outputs[0]
    body = relax.SeqExpr([*seq.blocks, relax.BindingBlock(bindings)], new_ret)
    mod["main"] = relax.Function(func.params, body, new_ret.ty, func.is_pure, func.attrs)
    return relax.transform.Normalize()(mod)
