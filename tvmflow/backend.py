"""The ONNX backend API (`onnx.backend.base.Backend`) on top of tvmflow's compile path.

`prepare(model)` compiles for this host's preset (`x86`/`arm` alias) through the normal
frontend → compile path with verification off, into a build cache keyed by the model bytes,
the input shapes, the preset and tvmflow's own code, and loads the artifact with the
production runtime. ONNX models often leave input dims symbolic; tvmflow compiles static
shapes only, so such a model is compiled at the first `run`, for the shapes it is given (and
again for each new shape). Inputs that are attributes in spirit (a Reshape's shape, a
reduction's axes: `ATTRIBUTE_INPUTS`) and empty inputs are baked in as constants the same way,
keyed by their values. This is what lets ONNX's own backend test runner
(`onnx.backend.test.BackendTest`) drive tvmflow.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from tvmflow.errors import TvmflowError
from tvmflow.runtime import CompiledModel

_REDUCE = ("L1", "L2", "LogSum", "LogSumExp", "Max", "Mean", "Min", "Prod", "Sum", "SumSquare")
# Input slots that carry what is an attribute in spirit (axes, shapes, pads, sizes, k, bounds).
# TVM's importer needs them constant; exported models hold them as initializers, but ONNX's
# node tests (and some exporters) feed them as graph inputs. The backend bakes such inputs
# into the model it compiles, keyed by their values: other values make another build.
ATTRIBUTE_INPUTS: dict[str, tuple[int, ...]] = {
    **{f"Reduce{op}": (1,) for op in _REDUCE},
    **{op: (0,) for op in ("BlackmanWindow", "HammingWindow", "HannWindow", "ConstantOfShape")},
    **{
        op: (1,)
        for op in ("AffineGrid", "CastLike", "CenterCropPad", "Compress", "CumProd", "CumSum")
    },
    **{op: (1,) for op in ("Expand", "OneHot", "Reshape", "Split", "Squeeze", "Tile", "TopK")},
    **{op: (1,) for op in ("Trilu", "Unsqueeze", "Upsample")},
    "Clip": (1, 2),
    "Col2Im": (1, 2),
    "DFT": (1, 2),
    "Dropout": (1, 2),
    "Loop": (0, 1),
    "MaxUnpool": (2,),
    "MelWeightMatrix": (0, 1, 2, 3, 4),
    "NonMaxSuppression": (2, 3, 4),
    "Pad": (1, 2, 3),
    "Range": (0, 1, 2),
    "Resize": (1, 2, 3),
    "Slice": (1, 2, 3, 4),
    "STFT": (1, 3),
}

HOST_TARGET = "x86" if os.uname().machine in ("x86_64", "AMD64") else "arm"
CACHE_ENV = "TVMFLOW_BACKEND_CACHE"


def cache_dir() -> Path:
    """Where compiled backend artifacts are kept ($TVMFLOW_BACKEND_CACHE or ~/.cache)."""
    default = Path.home() / ".cache" / "tvmflow" / "backend"
    return Path(os.environ.get(CACHE_ENV) or default)


@functools.cache
def code_fingerprint() -> str:
    """sha256 of tvmflow's sources and TVM's version: a code change invalidates cached builds."""
    import tvm

    digest = hashlib.sha256(tvm.__version__.encode())
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    for path in sorted((root.parent / "targets").glob("*.toml")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]] | None:
    """Every input's declared shape, or None when one has a symbolic or unknown dim."""
    shapes = {}
    for value in _graph_inputs(model):
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
            return None
        dims = tensor_type.shape.dim
        if any(d.dim_value <= 0 for d in dims):
            return None
        shapes[value.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def attribute_inputs(model: onnx.ModelProto) -> frozenset[str]:
    """The graph inputs that some node reads at an attribute-like slot (`ATTRIBUTE_INPUTS`)."""
    names = {i.name for i in _graph_inputs(model)}
    found = {
        node.input[slot]
        for node in model.graph.node
        for slot in ATTRIBUTE_INPUTS.get(node.op_type, ())
        if slot < len(node.input) and node.input[slot] in names
    }
    return frozenset(found)


def bake(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` with these graph inputs turned into initializers of these values."""
    baked = onnx.ModelProto()
    baked.CopyFrom(model)
    kept = [i for i in baked.graph.input if i.name not in values]
    del baked.graph.input[:]
    baked.graph.input.extend(kept)
    baked.graph.initializer.extend(
        onnx.numpy_helper.from_array(np.asarray(value), name) for name, value in values.items()
    )
    return baked


def compile_cached(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> CompiledModel:
    """Compile `model` for the host preset with these input shapes (cached), then load it."""
    from filelock import FileLock

    from tvmflow.compile import CompileOptions, compile_model
    from tvmflow.frontend import load_onnx
    from tvmflow.runtime import load
    from tvmflow.targets import resolve_preset

    preset = resolve_preset(HOST_TARGET)
    data = model.SerializeToString()
    key = hashlib.sha256(data)
    key.update(repr(sorted((k, tuple(v)) for k, v in shapes.items())).encode())
    key.update(preset.name.encode())
    key.update(code_fingerprint().encode())
    directory = cache_dir() / key.hexdigest()[:32]
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if not (directory / "manifest.json").is_file():
            with tempfile.TemporaryDirectory(prefix="tvmflow-backend-") as scratch:
                path = Path(scratch) / "model.onnx"
                path.write_bytes(data)
                imported = load_onnx(path, shapes)
                # No verification (the caller compares) and no tuning logs (correctness only).
                options = CompileOptions(verify=False, use_shipped_logs=False)
                compile_model(imported, preset, directory, options)
    return load(directory)


class TvmflowRep(BackendRep):
    """A prepared model: compiled per distinct input shapes (and attribute-input values)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self._model = model
        self._inputs = [i.name for i in _graph_inputs(model)]
        self._outputs = [o.name for o in model.graph.output]
        self._baked = attribute_inputs(model)
        self._compiled: dict[tuple[Any, ...], CompiledModel] = {}
        shapes = _static_shapes(model)
        if shapes is not None and not self._baked:
            self._get({}, shapes)

    def _get(
        self, baked: Mapping[str, np.ndarray], shapes: Mapping[str, Sequence[int]]
    ) -> CompiledModel:
        key = (
            tuple(tuple(shapes[name]) for name in self._inputs if name in shapes),
            tuple(
                (name, value.dtype.str, value.shape, value.tobytes())
                for name, value in sorted(baked.items())
            ),
        )
        if key not in self._compiled:
            model = bake(self._model, baked) if baked else self._model
            self._compiled[key] = compile_cached(model, shapes)
        return self._compiled[key]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Run on arrays in graph-input order (a list), by name (a dict), or one array."""
        feeds = self._feeds(inputs)
        # Empty tensors carry only a shape, and tvmflow compiles no zero-sized inputs: bake them.
        names = [n for n in feeds if n in self._baked or feeds[n].size == 0]
        baked = {name: feeds.pop(name) for name in names}
        compiled = self._get(baked, {name: arr.shape for name, arr in feeds.items()})
        results = compiled.run(feeds)
        return namedtupledict("Outputs", self._outputs)(*[results[n] for n in self._outputs])

    def _feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            feeds = {name: np.asarray(value) for name, value in inputs.items()}
        else:
            values = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(values) > len(self._inputs):
                raise TvmflowError(
                    f"got {len(values)} inputs, the model takes {len(self._inputs)} "
                    f"({', '.join(self._inputs)})"
                )
            feeds = {
                name: np.asarray(value) for name, value in zip(self._inputs, values, strict=False)
            }
        missing = [name for name in self._inputs if name not in feeds]
        if missing:
            raise TvmflowError(f"missing input(s) {', '.join(missing)}")
        return feeds


class TvmflowBackend(Backend):
    """ONNX backend: CPU of this host only (tvmflow's host preset)."""

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> TvmflowRep:
        if not cls.supports_device(device):
            raise TvmflowError(f"tvmflow's ONNX backend runs on CPU only, not {device}")
        onnx.checker.check_model(model)
        return TvmflowRep(model)

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: onnx.NodeProto,
        inputs: Any,
        device: str = "CPU",
        outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """Run one node: wrap it in a one-node model typed from the given inputs."""
        values = [np.asarray(v) for v in (inputs.values() if isinstance(inputs, dict) else inputs)]
        names = [name for name in node.input if name]
        graph_inputs = [
            onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape
            )
            for name, v in zip(names, values, strict=True)
        ]
        infos = list(outputs_info or [])
        graph_outputs = [
            onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(infos[i][0])), infos[i][1]
            )
            if i < len(infos)
            else onnx.helper.make_empty_tensor_value_info(name)
            for i, name in enumerate(node.output)
        ]
        graph = onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs)
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        model = onnx.shape_inference.infer_shapes(model)  # types the untyped outputs
        return cls.run_model(model, values, device)


prepare = TvmflowBackend.prepare
run_model = TvmflowBackend.run_model
run_node = TvmflowBackend.run_node
supports_device = TvmflowBackend.supports_device
