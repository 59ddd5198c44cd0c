"""Serving: artifacts behind the Open Inference Protocol (KServe v2) over REST and gRPC.

The protocol, health and readiness endpoints, gRPC service and `/metrics` come from KServe's
Python model server (`pip install tvmflow[serve]`); this module only adapts an artifact to
it. Each model is a `kserve.Model` around `tvmflow.load` (TVM's runtime library only, never
the compiler), so the same class also runs as a KServe custom predictor on Kubernetes.

Flow: check and load every artifact (a bad one stops start-up before anything listens) →
listen → run each model once on a worker thread (readiness stays false until every model
has) → serve: the event loop decodes requests, validates them against the manifest, and
runs each on a thread pool sized to the host → SIGTERM drains in-flight requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.inputs import frozen_given, random_inputs
from tvmflow.manifest import FrozenInput, TensorSpec, read_manifest


@contextlib.contextmanager
def _bare_argv() -> Iterator[None]:
    """kserve parses sys.argv when imported; `tvmflow serve`'s own flags are not for it."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


try:
    with _bare_argv():
        import kserve
        import orjson
        from fastapi.exceptions import FastAPIDeprecationWarning
        from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
        from kserve.errors import InvalidInput
        from kserve.protocol.dataplane import DataPlane
        from kserve.protocol.infer_type import RequestedOutput
        from kserve.utils.numpy_codec import from_np_dtype
        from prometheus_client import Counter, Gauge, Histogram
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise TvmflowError(
        f"`tvmflow serve` needs the serve extra ({exc.name} is missing): "
        "pip install 'tvmflow[serve]'"
    ) from exc

ENGINES = ("tvmflow", "onnxruntime")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# Per-model metrics, next to KServe's own request_{preprocess,predict,postprocess}_seconds
# histograms: those have no error count and their first bucket (5 ms) holds every request of
# a small model, so the latency histogram here starts at 0.1 ms.
REQUESTS = Counter(
    "tvmflow_requests", "Inference requests that reached a model.", ["model_name", "protocol"]
)
ERRORS = Counter(
    "tvmflow_request_errors",
    "Inference requests refused (invalid: 400) or failed (failed: 500), per model.",
    ["model_name", "reason"],
)
IN_FLIGHT = Gauge(
    "tvmflow_requests_in_flight", "Requests decoded and not yet answered.", ["model_name"]
)
LATENCY = Histogram(
    "tvmflow_request_seconds",
    "Time from a decoded request to its outputs: validation, queueing for a worker, the run.",
    ["model_name"],
    buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class Engine(Protocol):
    """What serving needs of a loaded model: its signature and a thread-safe `run`."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def frozen(self) -> tuple[FrozenInput, ...]: ...

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class ModelSource:
    """One model to serve: its endpoint name, its artifact, and (onnxruntime engine) its ONNX."""

    name: str
    directory: Path
    onnx: Path | None = None


@dataclass(frozen=True)
class ThreadBudget:
    """Requests run on `workers` threads, each with a TVM pool of `tvm_threads`.

    TVM keeps one pool per calling thread, so a request's kernels use its worker's pool and
    the host's CPUs are shared as workers x tvm_threads <= cpus.
    """

    workers: int
    tvm_threads: int

    @classmethod
    def for_host(cls, workers: int | None, cpus: int) -> ThreadBudget:
        chosen = workers or cpus
        return cls(chosen, max(1, cpus // chosen))


@dataclass(frozen=True)
class ServeOptions:
    """How to serve: ports, the thread budget, the engine (tvmflow, or onnxruntime to compare)."""

    http_port: int = 8080
    grpc_port: int = 8081
    workers: int | None = None  # None: one per CPU (see ThreadBudget)
    engine: str = "tvmflow"
    grace_period_s: int = 30


@dataclass(frozen=True)
class _OrtEngine:
    """onnxruntime on the artifact's own ONNX, for side-by-side serving measurements."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    frozen: tuple[FrozenInput, ...] = ()


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota.

    A container with a CPU limit (Kubernetes `limits.cpu`) still sees every core of the node
    in its affinity; sizing the pools to those would oversubscribe the quota.
    """
    cpus = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = cgroup.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    return cpus


def parse_source(text: str) -> tuple[str, Path]:
    """`DIR` or `NAME=DIR` → (name, directory); the name defaults to the directory's name."""
    name, sep, path = text.rpartition("=")
    directory = Path(path if sep else text)
    name = name if sep else directory.resolve().name
    if not _NAME.fullmatch(name):
        raise TvmflowError(
            f"{name!r} is not a usable model name (letters, digits, '_', '.', '-'; it is part "
            "of the URL): pass NAME=DIR"
        )
    return name, directory


def datatype(dtype: str) -> str:
    """numpy dtype name → the protocol's datatype name (FP32, INT64, BOOL, ...)."""
    name = from_np_dtype(np.dtype(dtype))
    if name is None:
        raise TvmflowError(f"dtype {dtype} has no Open Inference Protocol datatype")
    return str(name)


def _typed_shape(datatype: str, shape: Sequence[Any]) -> str:
    return f"{datatype}[{','.join(map(str, shape))}]"


def describe(spec: TensorSpec) -> str:
    return f"{spec.name}: {_typed_shape(datatype(spec.dtype), spec.shape)}"


def open_engine(source: ModelSource, engine: str, threads: int) -> Engine:
    """Check and load one model (TvmflowError for a missing, foreign or tampered artifact)."""
    if engine == "tvmflow":
        from tvmflow.runtime import load

        return load(source.directory)
    if engine == "onnxruntime":
        from tvmflow import bench, engines

        manifest = read_manifest(source.directory)
        if source.onnx is None:
            raise TvmflowError(
                f"--engine onnxruntime needs the ONNX file of model {source.name}: "
                f"pass --onnx {source.name}=FILE.onnx"
            )
        bench.check_artifact_matches(source.onnx, manifest, source.directory)
        frozen = [f.to_json() for f in manifest.frozen]
        spec = engines.EngineSpec("onnxruntime", str(source.onnx), threads, frozen=frozen)
        opened = engines.open_engine(spec)
        return _OrtEngine(manifest.inputs, manifest.outputs, opened.run, manifest.frozen)
    raise TvmflowError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")


class ServedModel(kserve.Model):  # type: ignore[misc]
    """One artifact as a KServe model: v2 metadata from its manifest, runs on a shared pool."""

    def __init__(self, name: str, engine: Engine, pool: concurrent.futures.Executor) -> None:
        super().__init__(name)
        self._model = engine
        self._pool = pool
        self._inputs = {s.name: s for s in engine.inputs}
        self._outputs = {s.name: s for s in engine.outputs}
        self.signature = ", ".join(describe(s) for s in engine.inputs)
        self.ready = False  # until warm_up has run it once

    def load(self) -> bool:
        """KServe calls this for a model that is not ready; warm_up is what makes it ready."""
        return bool(self.ready)

    def start(self) -> None:
        """Unlike kserve.Model's, does not declare the model ready."""

    def warm_up(self) -> None:
        """Run once on seeded inputs (first-run allocations happen here, not in a request)."""
        self._model.run(random_inputs(self._model.inputs, seed=0))
        self.ready = True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [_tensor_metadata(s) for s in self._model.inputs]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [_tensor_metadata(s) for s in self._model.outputs]

    async def predict(
        self,
        payload: kserve.InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> kserve.InferResponse:
        REQUESTS.labels(self.name, "grpc" if payload.from_grpc else "rest").inc()
        start = time.perf_counter()
        try:
            with IN_FLIGHT.labels(self.name).track_inprogress():
                arrays = self._arrays(payload)
                names = self._requested_outputs(payload)
                loop = asyncio.get_running_loop()
                results = await loop.run_in_executor(self._pool, self._model.run, arrays)
        except InvalidInput:
            ERRORS.labels(self.name, "invalid").inc()
            raise
        except Exception:
            ERRORS.labels(self.name, "failed").inc()
            raise
        LATENCY.labels(self.name).observe(time.perf_counter() - start)
        outputs = [_output(n, results[n]) for n in names]
        return kserve.InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )

    def _refuse(self, problem: str) -> InvalidInput:
        return InvalidInput(
            f"request does not match model {self.name}: {problem}; expected inputs {self.signature}"
        )

    def _arrays(self, request: kserve.InferRequest) -> dict[str, np.ndarray]:
        """Check names, datatypes and shapes against the manifest, then decode the data."""
        given = {i.name: i for i in request.inputs}
        problems = []
        missing = [n for n in self._inputs if n not in given]
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        baked = frozen_given(given, self._model.frozen)
        if baked:
            problems.append(baked)
        unknown = sorted(set(given) - set(self._inputs) - {f.spec.name for f in self._model.frozen})
        if unknown:
            problems.append(f"unknown {', '.join(unknown)}")
        if len(given) != len(request.inputs):
            problems.append("an input is given twice")
        for name, spec in self._inputs.items():
            tensor = given.get(name)
            if tensor is None:
                continue
            if tensor.datatype != datatype(spec.dtype) or list(tensor.shape) != list(spec.shape):
                problems.append(f"{name} is {_typed_shape(tensor.datatype, tensor.shape)}")
        if problems:
            raise self._refuse("; ".join(problems))
        arrays = {}
        for name, tensor in given.items():
            try:
                arrays[name] = tensor.as_numpy()
            except (ValueError, TypeError) as exc:
                shape = _typed_shape(tensor.datatype, tensor.shape)
                raise self._refuse(f"the data of {name} is not {shape}: {exc}") from exc
        return arrays

    def _requested_outputs(self, request: kserve.InferRequest) -> list[str]:
        wanted = [o.name for o in request.request_outputs or ()]
        unknown = [n for n in wanted if n not in self._outputs]
        if unknown:
            raise InvalidInput(
                f"model {self.name} has no output {', '.join(unknown)}; its outputs are "
                f"{', '.join(describe(s) for s in self._outputs.values())}"
            )
        return wanted or list(self._outputs)


def _output(name: str, array: np.ndarray) -> kserve.InferOutput:
    """An output holding its bytes: gRPC sends them as they are, REST as JSON or binary."""
    output = kserve.InferOutput(name, list(array.shape), datatype(array.dtype.name))
    output.set_data_from_numpy(array, binary_data=True)
    return output


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": datatype(spec.dtype), "shape": list(spec.shape)}


class _DataPlane(DataPlane):  # type: ignore[misc]
    """KServe's data plane with two changes.

    Server readiness means every model has run once. A REST body that arrives as bytes is
    decoded here: binary tensors stay numpy buffers (KServe turns each into a Python list of
    floats, ~100x the cost of the run for an image), and a body without the
    Inference-Header-Content-Length header is all JSON, as the protocol says (KServe refuses
    it, and that is how tritonclient sends JSON-only requests).
    """

    async def ready(self) -> bool:
        models = self.model_registry.get_models().values()
        return bool(models) and all(m.ready for m in models)

    def decode_inference_request(
        self, body: Any, headers: Mapping[str, str], model_name: str
    ) -> kserve.InferRequest:
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
        try:
            size = len(body) if length is None else int(length)
            return _request_from_bytes(body, size, model_name)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidInput(
                f"malformed inference request for model {model_name}: {exc}"
            ) from exc


def _request_from_bytes(body: bytes, json_length: int, model_name: str) -> kserve.InferRequest:
    """The protocol's binary extension: a JSON header, then each binary tensor's bytes."""
    header = orjson.loads(body[:json_length])
    tensors, raw, offset = [], [], json_length
    for item in header["inputs"]:
        params = item.get("parameters") or {}
        tensors.append(
            kserve.InferInput(
                item["name"], item["shape"], item["datatype"], item.get("data"), params
            )
        )
        size = params.get("binary_data_size")
        raw.append(None if size is None else body[offset : offset + int(size)])
        offset += int(size or 0)
        if size is None and item.get("data") is None:
            raise ValueError(f"input {item['name']} has neither data nor binary_data_size")
    if offset != len(body):
        raise ValueError(
            f"binary sizes add up to {offset - json_length} bytes, body has "
            f"{len(body) - json_length} after the JSON header"
        )
    outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in header.get("outputs") or ()]
    return kserve.InferRequest(
        model_name=model_name,
        infer_inputs=tensors,
        request_id=header.get("id"),
        raw_inputs=raw if any(r is not None for r in raw) else None,
        parameters=header.get("parameters"),
        request_outputs=outputs or None,
    )


def _check_port_free(port: int, flag: str) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError as exc:
            raise TvmflowError(
                f"cannot listen on port {port} ({exc.strerror}): pass a free {flag}"
            ) from exc


def serve(
    sources: Sequence[ModelSource], options: ServeOptions, log: Callable[[str], None]
) -> None:
    """Load every model, then serve them until SIGTERM/SIGINT (returns after draining)."""
    names = [s.name for s in sources]
    if not sources:
        raise TvmflowError("give at least one artifact directory to serve")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TvmflowError(
            f"model name {', '.join(duplicates)} is used twice: name them with NAME=DIR"
        )
    _check_port_free(options.http_port, "--http-port")
    _check_port_free(options.grpc_port, "--grpc-port")
    budget = ThreadBudget.for_host(options.workers, available_cpus())
    engines = [open_engine(s, options.engine, budget.tvm_threads) for s in sources]
    pool = concurrent.futures.ThreadPoolExecutor(
        budget.workers, "tvmflow-serve", initializer=_worker_init, initargs=(options, budget)
    )
    models = [ServedModel(s.name, e, pool) for s, e in zip(sources, engines, strict=True)]
    server = kserve.ModelServer(
        http_port=options.http_port,
        grpc_port=options.grpc_port,
        enable_latency_logging=False,
        grace_period=options.grace_period_s,
    )
    server.dataplane = _DataPlane(model_registry=server.registered_models)
    _quiet_per_request_logs()
    for model in models:
        server.register_model(model)
        log(f"model {model.name}: {model.signature} ({options.engine})")
    log(
        f"serving {len(models)} model(s) on http :{options.http_port} and grpc "
        f":{options.grpc_port}; {budget.workers} workers x {budget.tvm_threads} TVM threads"
    )
    failures: list[BaseException] = []
    warm = threading.Thread(target=_warm_up, args=(models, pool, failures, log), daemon=True)
    warm.start()
    try:
        server.start([])
    finally:
        pool.shutdown(wait=True)
    if failures:
        raise RuntimeError(f"a model failed its first run: {failures[0]}")


class _ClientErrorFilter(logging.Filter):
    """A bad request is answered 400 and counted in tvmflow_request_errors_total; KServe
    would also log it with a traceback, as if the server had failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InvalidInput))


def _quiet_per_request_logs() -> None:
    """No log line per request (access log, timings, gRPC method): /metrics counts them."""
    for name in ("kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    kserve_logger = logging.getLogger("kserve")
    kserve_logger.setLevel(logging.WARNING)
    kserve_logger.addFilter(_ClientErrorFilter())
    warnings.filterwarnings("ignore", category=FastAPIDeprecationWarning)


def _worker_init(options: ServeOptions, budget: ThreadBudget) -> None:
    if options.engine == "tvmflow":
        from tvmflow.runtime import configure_threads

        configure_threads(budget.tvm_threads)


def _warm_up(
    models: Sequence[ServedModel],
    pool: concurrent.futures.Executor,
    failures: list[BaseException],
    log: Callable[[str], None],
) -> None:
    """Run every model once; a failure stops the server (it could never become ready)."""
    try:
        for model in models:
            pool.submit(model.warm_up).result()
    except Exception as exc:
        failures.append(exc)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    log("ready")
