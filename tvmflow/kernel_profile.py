"""Per-kernel profile of a compiled artifact, measured beside onnxruntime in the same process.

The end-to-end numbers come from interleaved rounds (tvmflow, then onnxruntime, repeated) at
the same thread count, so a busy shared machine slows both sides alike and the ratio stays
meaningful. The kernel breakdown replays every kernel call of one inference (captured with the
Relax VM's instrument hook, real arguments, real call order) through TVM's time_evaluator.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tvmflow.engines import onnxruntime_session
from tvmflow.manifest import LIBRARY_NAME, read_manifest
from tvmflow.runtime import weight_tensors

if TYPE_CHECKING:
    import tvm

# Kernels whose GFLOP/s is worth reporting: the compute-bound ones (conv, matmul, dense).
COMPUTE_KERNELS = ("conv", "matmul", "dense")


@dataclass(frozen=True)
class KernelTime:
    """One fused kernel: all its calls in one inference."""

    name: str
    calls: int
    seconds: float
    flops: float

    @property
    def gflops_per_s(self) -> float | None:
        if not any(k in self.name for k in COMPUTE_KERNELS) or self.seconds <= 0:
            return None
        return self.flops / self.seconds / 1e9


@dataclass(frozen=True)
class ModelTimes:
    """Median end-to-end latency of both runtimes, measured in interleaved rounds.

    Wall-clock and process CPU time are both kept: on a shared machine a run's wall time
    includes the time other processes held the cores, its CPU time does not. With one
    thread (both runtimes then compute on the calling thread) CPU time is the robust
    measure; with several, wall time is the one that matters but needs a quiet machine.
    """

    tvmflow_p50: float
    onnxruntime_p50: float
    samples: int
    tvmflow_cpu_p50: float = 0.0
    onnxruntime_cpu_p50: float = 0.0

    @property
    def ratio(self) -> float:
        """tvmflow latency / onnxruntime latency (below 1: tvmflow is faster)."""
        return self.tvmflow_p50 / self.onnxruntime_p50

    @property
    def cpu_ratio(self) -> float:
        """tvmflow CPU time / onnxruntime CPU time per inference."""
        return self.tvmflow_cpu_p50 / self.onnxruntime_cpu_p50 if self.onnxruntime_cpu_p50 else 0


@dataclass(frozen=True)
class KernelProfile:
    model: str
    threads: int
    times: ModelTimes
    kernels: tuple[KernelTime, ...]

    @property
    def kernel_total(self) -> float:
        return sum(k.seconds for k in self.kernels)


def kernel_flops(mod: tvm.IRModule) -> dict[str, float]:
    """FLOPs per call of each TIR kernel, estimated from the (unscheduled) fused module."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    flops = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                flops[gv.name_hint] = float(estimate_tir_flops(tvm.IRModule({"main": func})))
            except RuntimeError:  # a kernel the estimator cannot analyse
                flops[gv.name_hint] = 0.0
    return flops


def set_threads(threads: int) -> None:
    """Size TVM's CPU thread pool (the same knob `tvmflow.load(num_threads=)` turns)."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(1, int(threads))


def time_side_by_side(
    run_tvm: Callable[[], object],
    run_ort: Callable[[], object],
    rounds: int = 5,
    per_round: int = 10,
) -> ModelTimes:
    """p50 latencies from alternating rounds of both runtimes (after one warm-up each)."""
    run_tvm()
    run_ort()
    wall: dict[str, list[float]] = {"tvm": [], "ort": []}
    cpu: dict[str, list[float]] = {"tvm": [], "ort": []}
    for _ in range(rounds):
        for key, fn in (("tvm", run_tvm), ("ort", run_ort)):
            for _ in range(per_round):
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                wall[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
    med = statistics.median
    return ModelTimes(
        med(wall["tvm"]), med(wall["ort"]), len(wall["tvm"]), med(cpu["tvm"]), med(cpu["ort"])
    )


def capture_kernel_calls(
    vm: Any, args: list[Any], kernels: set[str]
) -> list[tuple[str, list[Any]]]:
    """Every kernel call of one inference, in order, with its argument tensors."""
    calls: list[tuple[str, list[Any]]] = []

    def instrument(func: Any, symbol: str, before: bool, ret: Any, *call_args: Any) -> int:
        if before and str(symbol) in kernels:
            calls.append((str(symbol), list(call_args)))
        return 0

    vm.set_instrument(instrument)
    try:
        vm["main"](*args)
    finally:
        vm.set_instrument(None)
    return calls


def time_kernels(
    library: Any,
    calls: list[tuple[str, list[Any]]],
    flops: Mapping[str, float],
    repeat: int = 30,
) -> tuple[KernelTime, ...]:
    """Median time of each captured call, summed per kernel; slowest kernel first."""
    import tvm

    dev = tvm.cpu(0)
    totals: dict[str, list[float]] = {}
    for name, call_args in calls:
        evaluator = library.time_evaluator(name, dev, number=1, repeat=repeat)
        seconds = float(evaluator(*call_args).median)
        entry = totals.setdefault(name, [0.0, 0.0])
        entry[0] += 1
        entry[1] += seconds
    kernels = [
        KernelTime(name, int(n), seconds, flops.get(name, 0.0) * n)
        for name, (n, seconds) in totals.items()
    ]
    return tuple(sorted(kernels, key=lambda k: -k.seconds))


def profile_artifact(
    directory: Path,
    onnx_path: Path,
    feeds: Mapping[str, np.ndarray],
    flops: Mapping[str, float],
    threads: int,
    rounds: int = 5,
    per_round: int = 10,
) -> KernelProfile:
    """Time an artifact against onnxruntime end to end, then break its time down by kernel."""
    import tvm
    from tvm import relax

    set_threads(threads)
    dev = tvm.cpu(0)
    library = tvm.runtime.load_module(str(directory / LIBRARY_NAME))
    vm = relax.VirtualMachine(library, dev)
    session = onnxruntime_session(onnx_path, threads)
    names = [i.name for i in session.get_inputs()]
    args = [tvm.runtime.tensor(np.asarray(feeds[n], order="C"), dev) for n in names]
    args += weight_tensors(directory, read_manifest(directory), dev)
    times = time_side_by_side(
        lambda: vm["main"](*args), lambda: session.run(None, dict(feeds)), rounds, per_round
    )
    calls = capture_kernel_calls(vm, args, set(flops))
    kernel_lib = library.imports[0] if library.imports else library
    kernels = time_kernels(kernel_lib, calls, flops)
    return KernelProfile(onnx_path.stem, threads, times, kernels)


def format_profile(profile: KernelProfile, top: int = 25) -> str:
    """A plain-text table: end-to-end ratio, then the slowest kernels with share and GFLOP/s."""
    t = profile.times
    total = profile.kernel_total
    lines = [
        f"{profile.model}: tvmflow p50 {t.tvmflow_p50 * 1e3:.3f} ms, onnxruntime p50 "
        f"{t.onnxruntime_p50 * 1e3:.3f} ms, ratio {t.ratio:.2f}x "
        f"({profile.threads} threads, {t.samples} runs each, interleaved)",
        f"CPU time per run: tvmflow {t.tvmflow_cpu_p50 * 1e3:.3f} ms, onnxruntime "
        f"{t.onnxruntime_cpu_p50 * 1e3:.3f} ms, ratio {t.cpu_ratio:.2f}x",
        f"kernels: {len(profile.kernels)} distinct, sum {total * 1e3:.3f} ms "
        f"({total / t.tvmflow_p50:.0%} of end-to-end p50)",
        f"{'ms':>9} {'share':>6} {'calls':>5} {'GFLOP/s':>8}  kernel",
    ]
    for k in profile.kernels[:top]:
        rate = k.gflops_per_s
        lines.append(
            f"{k.seconds * 1e3:9.3f} {k.seconds / total:6.1%} {k.calls:5d} "
            f"{'' if rate is None else f'{rate:8.1f}':>8}  {k.name}"
        )
    rest = profile.kernels[top:]
    if rest:
        seconds = sum(k.seconds for k in rest)
        lines.append(f"{seconds * 1e3:9.3f} {seconds / total:6.1%}        ...  {len(rest)} more")
    return "\n".join(lines)
