"""The engines `bench` measures: one class per engine, found by name in `ENGINES`.

Each engine imports its package (timed apart from loading), opens a model for a given
thread count and says which precision it actually computes in, so a table never compares
a bf16 engine with an fp32 one without saying so. `onnxruntime` is the accuracy reference;
`openvino` is OpenVINO pinned to f32 (like for like); `openvino-default` is OpenVINO as a
user who changes nothing runs it (on CPUs with AVX512_BF16 or AMX its default is bf16, and
matmuls with int8 weights quantize their activations to int8).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tvmflow.errors import TvmflowError

TVMFLOW = "tvmflow"
REFERENCE = "onnxruntime"

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class EngineSpec:
    """Enough to open an engine in this process or in a fresh child process (JSON-able)."""

    kind: str
    path: str  # the artifact directory for tvmflow, the ONNX file otherwise
    threads: int
    device: str = "cpu"
    shapes: dict[str, list[int]] = field(default_factory=dict)
    frozen: list[dict[str, Any]] = field(default_factory=list)  # FrozenInput.to_json()s


@dataclass(frozen=True)
class Opened:
    """A loaded engine: its run function, a short description, the precision it computes in."""

    run: Runner
    detail: str
    precision: str


class Engine:
    """One inference engine. `peer`: counted for the best peer (same precision as tvmflow's
    default, fp32); engines that trade accuracy for speed are reported, not made the bar."""

    name: ClassVar[str]
    peer: ClassVar[bool] = True

    def import_package(self) -> None:
        """Import the engine's package, so that load times measure loading, not importing."""

    def open(self, spec: EngineSpec) -> Opened:
        raise NotImplementedError


class Tvmflow(Engine):
    name = TVMFLOW
    peer = False

    def import_package(self) -> None:
        from tvmflow.runtime import load_runtime_library

        load_runtime_library()

    def open(self, spec: EngineSpec) -> Opened:
        from tvmflow.runtime import load

        model = load(spec.path, num_threads=spec.threads)
        manifest = model.manifest
        tuning = manifest.tuning
        detail = f"{manifest.preset}, {tuning.tasks_tuned}/{tuning.tasks_total} tuned"
        return Opened(model.run, detail, manifest.precision)


class OnnxRuntime(Engine):
    """onnxruntime's CPU (or CUDA) provider; it runs the graph's own dtypes (int8 ops of a
    quantized model in int8), with no precision hint."""

    name = REFERENCE

    def import_package(self) -> None:
        import onnxruntime  # noqa: F401

    def open(self, spec: EngineSpec) -> Opened:
        session = onnxruntime_session(spec.path, spec.threads, spec.device)
        names = [o.name for o in session.get_outputs()]

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, dict(feeds)), strict=True))

        return Opened(run, session.get_providers()[0], "fp32")


def onnxruntime_session(
    model: str | Path | bytes, threads: int = 0, device: str = "cpu", as_written: bool = False
) -> Any:
    """The onnxruntime session a user would have (default graph optimizations): the one way
    tvmflow opens onnxruntime, for benchmarks, serving, kernel profiles, scripts and,
    `as_written`, as the accuracy reference. `model`: a file, or a serialized ModelProto.
    `threads=0` leaves onnxruntime's default; `device="cuda"` takes the CUDA provider when
    this onnxruntime build has it.

    `as_written`: basic graph optimizations only (constant folding, no-op removal), which
    keep every value. The extended ones fuse quantized ops into kernels that round
    differently (DynamicQuantizeLinear + MatMulInteger -> DynamicQuantizeMatMul moved a
    dynamically quantized encoder's output by 0.067): a reference must compute the model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if as_written:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    provider = "CPUExecutionProvider"
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        provider = "CUDAExecutionProvider"
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=[provider])


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise TvmflowError(
            "--compare openvino needs OpenVINO, which is not installed: "
            "pip install tvmflow[openvino]"
        ) from exc
    return openvino


# Under the f32 hint OpenVINO still quantizes activations to int8 (groups of 32) for matmuls
# with int8-compressed weights: minilm-int8 ran 1.8x faster that way, 0.09 off onnxruntime
# (exact, 2e-6, without it). Like for like with tvmflow's fp32 means without it.
_DYNAMIC_QUANT = "DYNAMIC_QUANTIZATION_GROUP_SIZE"


class OpenVino(Engine):
    """OpenVINO's CPU plugin in latency mode, pinned to f32 (no dynamic quantization of
    activations either): like for like with tvmflow."""

    name = "openvino"
    hint: ClassVar[str | None] = "f32"

    def import_package(self) -> None:
        import_openvino()

    def open(self, spec: EngineSpec) -> Opened:
        ov = import_openvino()
        core = ov.Core()
        try:
            model = core.read_model(spec.path)
        except RuntimeError as exc:  # its ONNX frontend rejects the model: a peer's limit
            raise TvmflowError(
                f"OpenVINO cannot read {Path(spec.path).name}: {_ov_reason(str(exc))}; "
                "compare without it: --compare onnxruntime"
            ) from exc
        model.reshape(spec.shapes)
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": spec.threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        how = "default precision"
        if self.hint:
            config["INFERENCE_PRECISION_HINT"] = self.hint
            how = f"{self.hint} hint"
            if _DYNAMIC_QUANT in core.get_property("CPU", "SUPPORTED_PROPERTIES"):
                config[_DYNAMIC_QUANT] = 0
                how += ", no dynamic quantization"
        # the ONNX names, read before compiling: a compiled port may fuse tensors and report
        # one of their other names (bert_dynbatch_op13's output came back as a LayerNorm Div)
        names = [port.get_any_name() for port in model.outputs]
        compiled = core.compile_model(model, "CPU", config)
        precision = _ov_precision(compiled.get_property("INFERENCE_PRECISION_HINT"))
        request = compiled.create_infer_request()

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = request.infer(dict(feeds))
            return {name: np.array(result[i]) for i, name in enumerate(names)}

        return Opened(run, f"CPU plugin, {how}, latency hint", precision)


class OpenVinoDefault(OpenVino):
    """OpenVINO as users run it: no precision hint, so bf16 on CPUs with AVX512_BF16/AMX.
    Reported beside the f32 peers, never the bar for tvmflow's fp32 code."""

    name = "openvino-default"
    hint = None
    peer = False


def _ov_reason(message: str) -> str:
    """OpenVINO's multi-line error in one line: the ops it failed on and the first detail,
    without the C++ source locations (its first line is only `Exception from core.cpp`)."""
    noise = ("Exception from", "Check '", "While validating", "FrontEnd API failed", "Summary:")
    lines = [ln.strip(" -") for ln in message.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(noise)]
    failed = [ln for ln in lines if ln.startswith("Conversion is failed for")]
    detail = [ln for ln in lines if not ln.startswith(("Conversion is failed", "Model wasn't"))]
    detail = [ln for ln in detail if not ln.endswith("with a message:")]
    if failed:
        ops = failed[0].partition(":")[2].strip()
        reason = f"conversion failed for {ops}" + (f" ({detail[0]})" if detail else "")
    else:
        reason = (lines or message.strip().splitlines() or ["no message"])[-1]
    return " ".join(reason.split())[:300]


def _ov_precision(value: Any) -> str:
    """OpenVINO's element type (f32, bf16, f16) in the names tvmflow uses (fp32, bf16, fp16)."""
    text = str(getattr(value, "get_type_name", lambda: value)()).lower()
    return {"f32": "fp32", "f16": "fp16"}.get(text, text)


ENGINES: dict[str, Engine] = {
    e.name: e for e in (Tvmflow(), OnnxRuntime(), OpenVino(), OpenVinoDefault())
}
COMPARATORS = tuple(name for name in ENGINES if name != TVMFLOW)


def open_engine(spec: EngineSpec) -> Opened:
    """Open `spec`'s engine; a peer running the original ONNX file is also fed the inputs
    the artifact was compiled with frozen (`--freeze`), so both compute the same thing."""
    opened = engine(spec.kind).open(spec)
    if spec.kind == TVMFLOW or not spec.frozen:
        return opened
    from tvmflow.manifest import FrozenInput

    constants = {f.spec.name: f.array() for f in map(FrozenInput.from_json, spec.frozen)}
    inner = opened.run

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inner({**feeds, **constants})

    return dataclasses.replace(opened, run=run)


def engine(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise TvmflowError(f"unknown engine {name!r}; valid: {', '.join(COMPARATORS)}") from None
