"""Bench: a tvmflow artifact side by side with onnxruntime (and OpenVINO) on identical inputs.

What each number means (every engine gets the same inputs and the same thread count):

- `load_s`: seconds to load the model into a ready-to-run engine in this process (artifact
  check + library load for tvmflow, session creation for onnxruntime, read + compile for
  OpenVINO); engine imports are not included. `compile_s`: tvmflow's compile time, when the
  artifact was compiled for this run (`--target`).
- `first_run_ms`: the first call right after loading (lazy initialisation shows up here).
- mean/std/min/p50/p90/p99 (ms): per-call latency over the timed rounds. Rounds interleave
  the engines (A, B, A, B, ... with the order rotating each round), each engine running calls
  for `min_time / rounds` seconds per round, so drift of a noisy machine hits every engine
  alike. A short pause before each slice lets the previous engine's spinning threads go idle.
- `throughput_per_s`: 1000 / mean_ms, calls per second one at a time at the given shapes.
- `peak_rss_mb`: peak resident memory of a *fresh* process that imports the engine, loads the
  model and runs it once (`VmHWM`); `base_rss_mb` is that process's RSS after the imports,
  before loading. Each engine is probed in its own child process, since RSS is per process.
- ratio: p50(tvmflow) / p50(other) with a 95 % percentile-bootstrap interval (seeded).
- accuracy: each engine's outputs against onnxruntime's with the ops as written (basic graph
  optimizations: its extended fusions of quantized ops round differently); the
  tolerance decides pass/fail for tvmflow, whose failure is exit code 3.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tvmflow.accuracy import (
    Tolerance,
    compare,
    onnxruntime_outputs,
    output_scales,
    quant_allowance,
    ranked_outputs,
    tolerance_for,
)
from tvmflow.engines import (
    COMPARATORS,
    ENGINES,
    REFERENCE,
    TVMFLOW,
    EngineSpec,
    Runner,
    engine,
    import_openvino,
    open_engine,
)
from tvmflow.errors import BenchAccuracyError, TvmflowError
from tvmflow.inputs import check_inputs, random_inputs
from tvmflow.manifest import Manifest, OutputAccuracy, TensorSpec, read_manifest, sha256_file

if TYPE_CHECKING:
    import onnx

SETTLE_S = 0.02  # pause before each timed slice: the other engine's spinning threads go idle
PROBE_TIMEOUT_S = 600


@dataclass(frozen=True)
class BenchOptions:
    """How to measure. `comparators` always includes onnxruntime (the accuracy reference)."""

    threads: int | None = None  # None: the host's physical cores, as TVM defaults to
    warmup: int = 3
    rounds: int = 10
    min_time: float = 2.0  # seconds of timed calls per engine, spread over the rounds
    comparators: tuple[str, ...] = (REFERENCE,)
    tolerance: Tolerance = field(default_factory=Tolerance)
    measure_rss: bool = True
    seed: int = 0
    bootstrap: int = 2000
    progress: bool = False


@dataclass(frozen=True)
class EngineStats:
    """One engine's measurements; latencies in milliseconds."""

    name: str
    detail: str
    load_s: float
    first_run_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput_per_s: float
    runs: int
    compile_s: float | None = None
    peak_rss_mb: float | None = None
    base_rss_mb: float | None = None
    precision: str = "fp32"  # what the engine computed in (OpenVINO's default may be bf16)
    samples_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class RatioCI:
    """p50(engine) / p50(baseline) with a 95 % bootstrap interval: < 1 means engine is faster."""

    engine: str
    baseline: str
    p50_ratio: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class EngineAccuracy:
    """An engine's outputs against onnxruntime's; `failing` names outputs beyond tolerance."""

    engine: str
    outputs: tuple[OutputAccuracy, ...]
    failing: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failing


@dataclass(frozen=True)
class BenchReport:
    """Everything one `bench` run measured, for one model."""

    model: str
    model_sha256: str
    artifact: str
    preset: str
    tuning: dict[str, Any]
    inputs: tuple[TensorSpec, ...]
    threads: int
    options: BenchOptions
    engines: tuple[EngineStats, ...]
    ratios: tuple[RatioCI, ...]
    accuracy: tuple[EngineAccuracy, ...]
    machine: dict[str, Any]
    warnings: tuple[str, ...] = ()
    name: str = ""  # the row's label (a model at several batch sizes has several rows)

    @property
    def label(self) -> str:
        return self.name or Path(self.model).stem

    @property
    def best_peer(self) -> RatioCI | None:
        """tvmflow against the fastest fp32 peer (onnxruntime, OpenVINO at f32) of this run;
        a tvmflow artifact of lower precision (bf16) also against engines of its precision
        (OpenVINO's default is bf16 on AVX512_BF16 CPUs)."""
        mine = self.engine(TVMFLOW).precision
        peers = [
            r
            for r in self.ratios
            if ENGINES[r.baseline].peer
            or (mine != "fp32" and self.engine(r.baseline).precision == mine)
        ]
        return min(peers, key=lambda r: self.engine(r.baseline).p50_ms, default=None)

    @property
    def peer_label(self) -> str:
        """What `best_peer` compares with, for table headings."""
        mine = self.engine(TVMFLOW).precision
        return "best fp32 peer" if mine == "fp32" else f"best fp32 or {mine} peer"

    @property
    def passed(self) -> bool:
        """tvmflow's accuracy decides: other comparators are reported, not judged."""
        return all(a.passed for a in self.accuracy if a.engine == TVMFLOW)

    def engine(self, name: str) -> EngineStats:
        return next(e for e in self.engines if e.name == name)

    def ratio(self, baseline: str = REFERENCE) -> RatioCI:
        return next(r for r in self.ratios if r.baseline == baseline)


# --- checks: refuse what cannot be a fair comparison, before measuring anything -------------


def _onnx_signature(model: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs as the ONNX file declares them; symbolic dims become -1."""
    import onnx

    from tvmflow.frontend import read_graph

    proto = read_graph(model)
    initializers = {i.name for i in proto.graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in tensor.shape.dim)
        return TensorSpec(value.name, dims, dtype)

    inputs = [spec(v) for v in proto.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in proto.graph.output]


def _matches(declared: TensorSpec, built: TensorSpec) -> bool:
    return (
        declared.name == built.name
        and declared.dtype == built.dtype
        and len(declared.shape) == len(built.shape)
        and all(d in (-1, b) for d, b in zip(declared.shape, built.shape, strict=True))
    )


def _signature(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str:
    def text(specs: Sequence[TensorSpec]) -> str:
        return ", ".join(s.describe().replace("-1", "?") for s in specs)

    return f"({text(inputs)}) -> ({text(outputs)})"


def check_artifact_matches(model: Path, manifest: Manifest, directory: Path) -> tuple[str, ...]:
    """Refuse an artifact compiled from another model file: another signature (names, dtypes,
    ranks, static dims) or the same signature with another sha256 (other weights would
    compare two different networks and blame the compiler); returns no warnings. The very
    file it was compiled from always matches: a model's declared output shapes may be wrong
    (ddddocr's CRNN declares [1, ?] for its [T, 1, classes] output)."""
    if sha256_file(model) == manifest.onnx_sha256:
        return ()
    inputs, outputs = _onnx_signature(model)
    frozen = {f.spec.name for f in manifest.frozen}
    inputs = [i for i in inputs if i.name not in frozen]  # constants in the artifact
    same = all(
        len(declared) == len(built) and all(map(_matches, declared, built))
        for declared, built in ((inputs, manifest.inputs), (outputs, manifest.outputs))
    )
    if not same:
        raise TvmflowError(
            f"artifact {directory} was built from a different model: it is "
            f"{_signature(manifest.inputs, manifest.outputs)}, {model.name} is "
            f"{_signature(inputs, outputs)}; pass the artifact compiled from {model.name}, or "
            "use --target to compile it"
        )
    if sha256_file(model) != manifest.onnx_sha256:
        raise TvmflowError(
            f"artifact {directory} was compiled from another file than {model} (same "
            f"signature, onnx_sha256 {manifest.onnx_sha256[:12]} in its manifest, this file "
            f"{sha256_file(model)[:12]}); pass the model it was compiled from, or use --target"
        )
    return ()


def check_runs_here(preset: str, why: str | None) -> None:
    """A benchmark needs the target's hardware: say which target and what is missing (`why`:
    `targets.host_mismatch`'s answer)."""
    if why is not None:
        raise TvmflowError(
            f"target {preset} {why}; benchmark it on such a machine, or use --target x86 here"
        )


def check_input_shapes(
    manifest: Manifest, directory: Path, shapes: Mapping[str, Sequence[int]]
) -> None:
    """An artifact runs only at the shapes it was compiled for."""
    built = {s.name: s.shape for s in manifest.inputs}
    wrong = [
        f"{name}={','.join(map(str, shape))}"
        for name, shape in shapes.items()
        if built.get(name) != tuple(shape)
    ]
    if wrong:
        expected = " ".join(f"{s.name}={','.join(map(str, s.shape))}" for s in manifest.inputs)
        raise TvmflowError(
            f"--input-shape {', '.join(wrong)} does not match artifact {directory}, which was "
            f"compiled for {expected}; drop --input-shape, or use --target to compile at "
            "those shapes"
        )


def bench_inputs(
    manifest: Manifest, arrays: Mapping[str, np.ndarray] | None, source: str, seed: int
) -> dict[str, np.ndarray]:
    """The user's arrays checked against the artifact's signature, or seeded random ones."""
    if arrays is None:
        return random_inputs(manifest.inputs, seed)
    try:
        check_inputs(arrays, manifest.inputs, manifest.frozen)
    except TvmflowError as exc:
        raise TvmflowError(f"{source}: {exc}") from exc
    return dict(arrays)


# --- peak RSS in a fresh child process per engine --------------------------------------------


def probe_memory(spec: EngineSpec, feeds_file: Path) -> tuple[float, float]:
    """(base, peak) RSS in MB of a fresh process that loads `spec` and runs it once."""
    request = json.dumps({"spec": dataclasses.asdict(spec), "feeds": str(feeds_file)})
    code = "from tvmflow.bench import probe_main; probe_main()"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            input=request,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{spec.kind} memory probe timed out after {exc.timeout}s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{spec.kind} memory probe failed (exit {proc.returncode}): {tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(result["base_rss_mb"]), float(result["peak_rss_mb"])


def probe_main() -> None:
    """Child-process side of `probe_memory`: reads a request on stdin, prints RSS as JSON."""
    import psutil

    request = json.loads(sys.stdin.read())
    spec = EngineSpec(**request["spec"])
    chosen = engine(spec.kind)
    chosen.import_package()
    with np.load(request["feeds"], allow_pickle=False) as data:
        feeds = {k: data[k] for k in data.files}
    base = psutil.Process().memory_info().rss / 2**20
    open_engine(spec).run(feeds)
    print(json.dumps({"base_rss_mb": base, "peak_rss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec,
    so a child of a big parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- measuring ------------------------------------------------------------------------------


def compile_for_bench(
    model: Path,
    target: str,
    out_dir: Path,
    input_shapes: Mapping[str, Sequence[int]],
    tuning_logs: Sequence[Path] = (),
    use_shipped_logs: bool = True,
    freeze: Mapping[str, Any] | None = None,
    precision: str = "fp32",
    threads: int | None = None,
) -> tuple[Path, float]:
    """Compile MODEL for a target that runs here; returns the artifact and the seconds it took.

    `threads` (the benchmark's thread count) becomes the target's `num-cores`, as the peers'
    sessions are built for their thread count: at 1 the kernels are serial
    (`tvmflow.schedules.cpu_single_core`). Verification is left to the benchmark, which
    reports accuracy and exits 3 on a failure.
    """
    from tvmflow.compile import CompileOptions, compile_model
    from tvmflow.frontend import load_onnx
    from tvmflow.targets import resolve_preset

    preset = resolve_preset(target).for_threads(threads)
    check_runs_here(preset.name, preset.host_mismatch())
    start = time.perf_counter()
    imported = load_onnx(model, input_shapes, freeze)
    options = CompileOptions(
        tuple(tuning_logs), use_shipped_logs, verify=False, precision=precision
    )
    artifact = compile_model(imported, preset, out_dir, options)
    return artifact.directory, time.perf_counter() - start


def run_bench(
    model: Path,
    artifact: Path,
    options: BenchOptions | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    inputs_source: str = "inputs",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    compile_s: float | None = None,
    name: str = "",
) -> BenchReport:
    """Check, load, probe, time and compare: the whole benchmark of one model.

    `inputs` (from `inputs_source`, named in errors) default to seeded random arrays;
    `input_shapes`, when given, must be the shapes the artifact was compiled for; `name`
    labels the row (default: the model file's stem).
    """
    from tvmflow.targets import host_cores, host_mismatch

    options = options or BenchOptions()
    model, artifact = Path(model), Path(artifact)
    comparators = _comparators(options.comparators)
    manifest = read_manifest(artifact)
    check_runs_here(
        manifest.preset, host_mismatch(manifest.arch, manifest.cpu_features, manifest.gpu_arch)
    )
    warnings = check_artifact_matches(model, manifest, artifact)
    check_input_shapes(manifest, artifact, input_shapes or {})
    feeds = bench_inputs(manifest, inputs, inputs_source, options.seed)
    threads = options.threads or host_cores()
    machine = machine_info(threads, comparators)
    shapes = {s.name: list(s.shape) for s in manifest.inputs}
    frozen = [f.to_json() for f in manifest.frozen]
    specs = [EngineSpec(TVMFLOW, str(artifact), threads, manifest.device, shapes)] + [
        EngineSpec(kind, str(model), threads, manifest.device, shapes, frozen)
        for kind in comparators
    ]

    memory = _probe_all(specs, feeds) if options.measure_rss else {}
    loaded = {spec.kind: _load(spec, feeds) for spec in specs}
    if manifest.device == "cuda" and loaded[REFERENCE].detail != "CUDAExecutionProvider":
        warnings += (
            "onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); "
            "it ran on the CPU",
        )
    for one in loaded.values():
        for _ in range(options.warmup):
            one.run(feeds)
    samples = _timed_rounds({k: e.run for k, e in loaded.items()}, feeds, options)

    engines = tuple(
        _stats(e, samples[k], compile_s if k == TVMFLOW else None, memory.get(k))
        for k, e in loaded.items()
    )
    rng = np.random.default_rng(options.seed)
    ratios = tuple(
        _ratio(TVMFLOW, k, samples[TVMFLOW], samples[k], options.bootstrap, rng)
        for k in comparators
    )
    # the reference computes the ops as written; the timed onnxruntime runs them as users do
    frozen_feeds = {f.spec.name: f.array() for f in manifest.frozen}  # the file still takes them
    expected = onnxruntime_outputs(model, {**feeds, **frozen_feeds}, threads)
    steps = quant_allowance(model, {**feeds, **frozen_feeds}, expected)
    ranked = ranked_outputs(model)
    accuracy = tuple(
        _accuracy(
            k,
            e.outputs,
            expected,
            tolerance_for(e.precision, options.tolerance, expected),
            steps,
            ranked,
        )
        for k, e in loaded.items()
        if k != REFERENCE
    )
    return BenchReport(
        model=str(model),
        model_sha256=sha256_file(model),
        artifact=str(artifact),
        preset=manifest.preset,
        tuning=dataclasses.asdict(manifest.tuning),
        inputs=manifest.inputs,
        threads=threads,
        options=options,
        engines=engines,
        ratios=ratios,
        accuracy=accuracy,
        machine=machine,
        warnings=warnings,
        name=name,
    )


def _comparators(names: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(names) - set(COMPARATORS))
    if unknown:
        raise TvmflowError(
            f"unknown engine(s) to compare with: {', '.join(unknown)}; valid: "
            f"{', '.join(COMPARATORS)}"
        )
    if any(n.startswith("openvino") for n in names):
        import_openvino()
    # onnxruntime is the accuracy reference, so it is always measured, and measured first
    return (REFERENCE, *(n for n in COMPARATORS if n in names and n != REFERENCE))


@dataclass(frozen=True)
class _Loaded:
    """An engine ready to time, with what loading it and its first call took and gave."""

    name: str
    run: Runner
    detail: str
    precision: str
    load_s: float
    first_run_ms: float
    outputs: dict[str, np.ndarray]


def _load(spec: EngineSpec, feeds: Mapping[str, np.ndarray]) -> _Loaded:
    """Load and run once."""
    chosen = engine(spec.kind)
    chosen.import_package()
    start = time.perf_counter()
    opened = open_engine(spec)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    outputs = opened.run(feeds)
    first_ms = (time.perf_counter() - start) * 1e3
    return _Loaded(
        spec.kind, opened.run, opened.detail, opened.precision, load_s, first_ms, outputs
    )


def _probe_all(
    specs: Sequence[EngineSpec], feeds: Mapping[str, np.ndarray]
) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="tvmflow-bench-") as tmp:
        feeds_file = Path(tmp) / "feeds.npz"
        arrays: dict[str, Any] = dict(feeds)  # numpy's stub types **kwds as allow_pickle
        np.savez(feeds_file, **arrays)
        return {spec.kind: probe_memory(spec, feeds_file) for spec in specs}


def _timed_rounds(
    runners: Mapping[str, Runner], feeds: Mapping[str, np.ndarray], options: BenchOptions
) -> dict[str, list[float]]:
    """Interleaved rounds; each engine runs for min_time/rounds per round (at least once)."""
    from tqdm import tqdm

    names = list(runners)
    samples: dict[str, list[float]] = {name: [] for name in names}
    slice_s = options.min_time / max(options.rounds, 1)
    for r in tqdm(range(max(options.rounds, 1)), desc="bench rounds", disable=not options.progress):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run = runners[name]
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                run(feeds)
                t1 = time.perf_counter()
                samples[name].append((t1 - t0) * 1e3)
                if t1 - start >= slice_s:
                    break
    return samples


def _stats(
    engine: _Loaded,
    samples: Sequence[float],
    compile_s: float | None,
    memory: tuple[float, float] | None,
) -> EngineStats:
    arr = np.asarray(samples, dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(arr, [50, 90, 99]))
    mean = float(arr.mean())
    return EngineStats(
        name=engine.name,
        detail=engine.detail,
        precision=engine.precision,
        load_s=engine.load_s,
        first_run_ms=engine.first_run_ms,
        mean_ms=mean,
        std_ms=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        min_ms=float(arr.min()),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        throughput_per_s=1e3 / mean,
        runs=int(arr.size),
        compile_s=compile_s,
        base_rss_mb=memory[0] if memory else None,
        peak_rss_mb=memory[1] if memory else None,
        samples_ms=tuple(float(v) for v in arr),
    )


def _ratio(
    engine: str,
    baseline: str,
    a: Sequence[float],
    b: Sequence[float],
    resamples: int,
    rng: np.random.Generator,
) -> RatioCI:
    """p50 ratio and its percentile-bootstrap 95 % interval (each engine resampled alone)."""
    xa, xb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    point = float(np.median(xa) / np.median(xb))
    ratios = []
    chunk = max(1, 2_000_000 // max(xa.size, xb.size))  # bounds memory for long runs
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        ma = np.median(rng.choice(xa, (k, xa.size)), axis=1)
        mb = np.median(rng.choice(xb, (k, xb.size)), axis=1)
        ratios.append(ma / mb)
    low, high = np.percentile(np.concatenate(ratios), [2.5, 97.5]) if ratios else (point, point)
    return RatioCI(engine, baseline, point, float(low), float(high))


def _accuracy(
    engine: str,
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    tolerance: Tolerance,
    quant: Mapping[str, tuple[float, int]],
    ranked: frozenset[str],
) -> EngineAccuracy:
    outputs = compare(actual, expected, quant, ranked)
    scales = output_scales(expected)
    failing = tuple(o.name for o in outputs if not tolerance.passes(o, scales[o.name]))
    return EngineAccuracy(engine, outputs, failing)


def check_accuracy(report: BenchReport) -> None:
    """Raise (exit code 3) when tvmflow's outputs disagree with onnxruntime beyond tolerance."""
    if report.passed:
        return
    precision = next((e.precision for e in report.engines if e.name == TVMFLOW), "fp32")
    tol = tolerance_for(precision, report.options.tolerance)
    bad = [
        f"{o.name}: max abs err {o.max_abs_err:.3g} (rel {o.max_rel_err:.3g})"
        for a in report.accuracy
        if a.engine == TVMFLOW
        for o in a.outputs
        if o.name in a.failing
    ]
    raise BenchAccuracyError(
        f"{Path(report.model).name}: tvmflow disagrees with onnxruntime beyond tolerance (atol "
        f"{tol.atol}, rtol {tol.rtol}): {', '.join(bad)}; recompile it, or loosen --atol/--rtol"
    )


# --- machine --------------------------------------------------------------------------------


def machine_info(threads: int, engines: Sequence[str] = (REFERENCE,)) -> dict[str, Any]:
    """What a reader needs to judge the numbers: CPU, cores, memory and every version."""
    import psutil

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    versions = {
        "tvmflow": version("tvmflow"),
        "apache-tvm": version("apache-tvm"),
        "onnxruntime": version("onnxruntime"),
        "numpy": version("numpy"),
        "python": platform.python_version(),
    }
    if "openvino" in engines:
        versions["openvino"] = version("openvino")
    return {
        "cpu": cpu_model(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "cores_available": len(os.sched_getaffinity(0)),
        "threads_used": threads,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "versions": versions,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def cpu_model() -> str:
    """The CPU's model name, as benchmark tables name the machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
