"""A/B of default schedule rules on one model: compiled without the named rules (A) and with
the full rule list (B), both timed in one process in interleaved rounds with onnxruntime.

Run through `scripts/rule-ab`. Prints process-CPU-time p50s and the ratios A/onnxruntime,
B/onnxruntime and B/A (CPU time: a busy machine preempts all three alike), plus wall-clock
minima. Verification is left to `tvmflow compile`; this only measures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tvmflow.compile  # noqa: F401  (compile-capable TVM first)
from tvmflow import schedules, zoo
from tvmflow.compile import CompileOptions, compile_model
from tvmflow.engines import onnxruntime_session
from tvmflow.frontend import load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.kernel_profile import set_threads
from tvmflow.manifest import read_manifest
from tvmflow.runtime import weight_tensors
from tvmflow.targets import resolve_preset


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.partition("=")
    return name, tuple(int(d) for d in dims.split(","))


def _caller(func: Any, args: list[Any]) -> Callable[[], object]:
    return lambda: func(*args)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/rule-ab", description=__doc__)
    parser.add_argument("model", help="zoo model name or .onnx path")
    parser.add_argument("--without", required=True, help="comma-separated rule class names")
    parser.add_argument("--input-shape", action="append", type=_shape, default=[])
    parser.add_argument("--target", default="x86")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)

    import numpy as np
    import tvm
    from tvm import relax

    scratch = Path(tempfile.mkdtemp(prefix="tvmflow-rule-ab-"))
    path = zoo.save(args.model, scratch) if args.model in zoo.MODELS else Path(args.model)
    model = load_onnx(path, dict(args.input_shape))
    # built for the thread count it runs with, as scripts/benchmark builds
    preset = resolve_preset(args.target).for_threads(args.threads)
    dropped = set(args.without.split(","))
    full = schedules.default_rules

    def without(target: Any) -> list[Any]:
        # a one-core target's rules come wrapped in cpu_single_core.SingleCore
        return [r for r in full(target) if type(getattr(r, "rule", r)).__name__ not in dropped]

    artifacts = {}
    for label, rules in (("A", without), ("B", full)):
        schedules.default_rules = rules  # type: ignore[assignment]
        options = CompileOptions(verify=False)
        artifacts[label] = compile_model(model, preset, scratch / label, options).directory
    schedules.default_rules = full

    set_threads(args.threads)
    feeds = random_inputs(model.inputs, seed=0)
    runs: dict[str, Callable[[], object]] = {}
    for label, directory in artifacts.items():
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(directory / "model.so")), tvm.cpu(0))
        tensors = [tvm.runtime.tensor(np.asarray(feeds[i.name]), tvm.cpu(0)) for i in model.inputs]
        # the weights file (format 2) follows the inputs as arguments, as tvmflow.load passes it
        tensors += weight_tensors(directory, read_manifest(directory), tvm.cpu(0))
        runs[label] = _caller(vm["main"], tensors)
    session = onnxruntime_session(path, args.threads)
    runs["onnxruntime"] = lambda: session.run(None, dict(feeds))

    cpu: dict[str, list[float]] = {k: [] for k in runs}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():
        run()
    for _ in range(args.rounds):
        for key, run in runs.items():
            for _ in range(5):
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                wall[key].append(time.perf_counter() - start)
                cpu[key].append(time.process_time() - start_cpu)
    p50 = {k: statistics.median(v) for k, v in cpu.items()}
    best = {k: min(v) for k, v in wall.items()}
    ort = p50["onnxruntime"]
    print(
        f"{path.stem} {dict(args.input_shape)}: CPU p50 ms A {p50['A'] * 1e3:.2f} "
        f"B {p50['B'] * 1e3:.2f} onnxruntime {ort * 1e3:.2f} | A/onnxruntime "
        f"{p50['A'] / ort:.2f}x B/onnxruntime {p50['B'] / ort:.2f}x B/A "
        f"{p50['B'] / p50['A']:.2f}x | wall min B/A {best['B'] / best['A']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
