"""The artifact manifest: what was built, from what, for where, and how accurate it is.

Pure Python and JSON so that the production loader can read it without TVM's compiler.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError

FORMAT_VERSION = 2  # 2: weights in their own file (`weights`); 1: weights inside the library
READABLE_VERSIONS = (1, 2)
LIBRARY_NAME = "model.so"
MANIFEST_NAME = "manifest.json"
DYNAMIC = -1  # an output dim only the data decides (KServe's Open Inference Protocol's -1 too)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and numpy dtype name of one model input or output. Inputs are static; an
    output dim the data decides (NonZero's count, NonMaxSuppression's boxes) is `DYNAMIC`."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        dims = ("?" if d == DYNAMIC else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{','.join(dims)}]"

    def accepts(self, shape: tuple[int, ...], dtype: str) -> bool:
        """Whether an array of this shape and dtype fits the spec (any size at a dynamic dim)."""
        return (
            dtype == self.dtype
            and len(shape) == len(self.shape)
            and all(d == want or want == DYNAMIC for d, want in zip(shape, self.shape, strict=True))
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]))


@dataclass(frozen=True)
class FrozenInput:
    """A model input fixed to a constant at compile time (`--freeze NAME=VALUE`): the library
    no longer takes it, and onnxruntime (which runs the original file) is fed `values`."""

    spec: TensorSpec
    values: tuple[float | int | bool, ...]  # flat, C order

    def array(self) -> Any:
        import numpy as np

        return np.asarray(self.values, dtype=self.spec.dtype).reshape(self.spec.shape)

    def describe(self) -> str:
        shown = ",".join(map(str, self.values[:8])) + ("..." if len(self.values) > 8 else "")
        return f"{self.spec.name}={shown}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self.spec) | {"shape": list(self.spec.shape), "values": list(self.values)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrozenInput:
        return cls(TensorSpec.from_json(data), tuple(data["values"]))


@dataclass(frozen=True)
class OutputAccuracy:
    """Worst disagreement of one output with onnxruntime on seeded random inputs."""

    name: str
    max_abs_err: float
    max_rel_err: float
    cosine: float
    # the output is a DequantizeLinear's: `quant_steps` of its quantization step (its scale)
    # were allowed on top of atol/rtol (`tvmflow.accuracy.quant_allowance`); for a float
    # output of a quantized model, 1 x onnxruntime's int8 session's own max deviation;
    # None / 0 when it was held to atol/rtol alone
    quant_step: float | None = None
    quant_steps: int = 0
    # its rows were matched as a set (`tvmflow.accuracy.ranked_outputs`): it comes after a
    # TopK / NonMaxSuppression, where near-tied scores may order rows either way
    rows_as_set: bool = False


@dataclass(frozen=True)
class TuningInfo:
    """Which tuning logs the build consulted (`log_digest`: one sha256 over them, None when
    there were none) and how many kernels a record of theirs scheduled."""

    log_digest: str | None
    tasks_tuned: int
    tasks_total: int


@dataclass(frozen=True)
class WeightsInfo:
    """The artifact's weights file (`tvmflow.weights`): the model's `count` extra arguments,
    `bytes` in all, checked against `sha256` before loading; `raw_dtypes`: the members stored
    as unsigned integers because .npy cannot name their dtype (bfloat16, float8_*)."""

    file: str
    sha256: str
    count: int
    bytes: int
    raw_dtypes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """Everything a loader or a reviewer needs to know about one artifact."""

    tvmflow_version: str
    tvm_version: str
    preset: str
    target: dict[str, Any]
    device: str  # "cpu" or "cuda"
    arch: str  # machine the library runs on, as platform.machine() spells it
    cpu_features: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    library_sha256: str
    onnx_sha256: str
    tuning: TuningInfo
    compile_seconds: float
    accuracy: tuple[OutputAccuracy, ...] | None = None
    precision: str = "fp32"  # "fp16": fp16 compute, fp32 inputs and outputs
    weights: WeightsInfo | None = None  # None: format version 1, weights inside the library
    frozen: tuple[FrozenInput, ...] = ()  # inputs baked in at compile time (not in `inputs`)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gpu_arch(self) -> str | None:
        """The GPU architecture of a CUDA artifact's device code ("sm_90"); None on CPUs."""
        return str(self.target.get("arch")) if self.device == "cuda" else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = [asdict(t) | {"shape": list(t.shape)} for t in self.inputs]
        data["outputs"] = [asdict(t) | {"shape": list(t.shape)} for t in self.outputs]
        data["cpu_features"] = list(self.cpu_features)
        data["frozen"] = [f.to_json() for f in self.frozen]
        if self.accuracy is not None:
            data["accuracy"] = {a.name: asdict(a) for a in self.accuracy}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        acc = data.get("accuracy")
        weights = data.get("weights")
        return cls(
            tvmflow_version=data["tvmflow_version"],
            tvm_version=data["tvm_version"],
            preset=data["preset"],
            target=dict(data["target"]),
            device=data["device"],
            arch=data["arch"],
            cpu_features=tuple(data.get("cpu_features", ())),
            inputs=tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in data["outputs"]),
            library_sha256=data["library_sha256"],
            onnx_sha256=data["onnx_sha256"],
            tuning=TuningInfo(**data["tuning"]),
            compile_seconds=float(data["compile_seconds"]),
            accuracy=None if acc is None else tuple(OutputAccuracy(**a) for a in acc.values()),
            precision=str(data.get("precision", "fp32")),
            weights=None if weights is None else WeightsInfo(**weights),
            frozen=tuple(FrozenInput.from_json(f) for f in data.get("frozen", ())),
            format_version=int(data["format_version"]),
            extra=dict(data.get("extra", {})),
        )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed so large weights do not sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file + rename so a killed process never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide artifacts from a service's own user
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: Path, flag: str) -> None:
    """Before any work: `path` (to be created or replaced) can be written, i.e. its nearest
    existing ancestor is a directory this process can create files in."""
    target = path.absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    folder = existing if existing.is_dir() else existing.parent
    if existing != target and not existing.is_dir():
        raise TvmflowError(f"{flag} {path}: {existing} is a file, not a directory")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise TvmflowError(
            f"{flag} {path}: cannot write in {folder} ({exc.strerror}); pass a place you can write"
        ) from exc


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = directory / MANIFEST_NAME
    write_atomic(path, (json.dumps(manifest.to_json(), indent=2) + "\n").encode())
    return path


def read_manifest(directory: Path) -> Manifest:
    """Read and version-check an artifact's manifest; a user-facing error if it is not one."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise TvmflowError(
            f"{directory} is not a tvmflow artifact: {MANIFEST_NAME} is missing "
            "(pass the directory written by `tvmflow compile -o DIR`)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TvmflowError(f"{path} is not valid JSON ({exc}); recompile the artifact") from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if version not in READABLE_VERSIONS:
        raise TvmflowError(
            f"{path} has artifact format version {version}, this tvmflow reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; recompile the model with this tvmflow"
        )
    try:
        manifest = Manifest.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise TvmflowError(f"{path} is incomplete ({exc!r}); recompile the artifact") from exc
    if version >= 2 and manifest.weights is None:
        raise TvmflowError(f"{path} does not list the weights file; recompile the artifact")
    return manifest
