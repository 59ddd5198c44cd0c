"""Memory of load + first run per reference model: tvmflow beside onnxruntime and OpenVINO.

For each reference model (scripts/benchmark's set) it compiles the artifact and reports, in
one run, the peak RSS of a fresh process per engine that imports it, loads the model and runs
it once (`tvmflow.bench`'s probe, the benchmark's RSS column), and that process's RSS after
the imports. tvmflow is probed twice on the same artifact: as it loads (tvm_ffi and
`libtvm_runtime.so`, no `tvm` package) and with `import tvm` (runtime library only) first, as
the loader did before, so the table shows what the import costs. `tvmflow run`'s max RSS
(`/usr/bin/time -v`) is the command-line view of the same.

`--format-1` adds the artifact's format-1 twin (the same lowering with its weights bound back
into model.so, as artifact format 1 stored them) and the CPU time per run of both (1 TVM
thread, the calling thread's CPU time, interleaved: robust on a busy machine). `--static-plan`
does the same for the twin built with TVM's default pipeline (StaticPlanBlockMemory's
storages, no arena: `tvmflow.memory_plan`), and the largest output difference of the two.

Usage: .venv/bin/python scripts/weights_memory.py [--models a,b] [--format-1] [--static-plan]
       [--seconds S]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchmark  # scripts/benchmark.py (the script's folder is on sys.path): the reference set
import numpy as np

import tvmflow
from tvmflow.bench import probe_memory
from tvmflow.engines import EngineSpec
from tvmflow.inputs import random_inputs
from tvmflow.manifest import sha256_file

TVMFLOW = Path(sys.executable).parent / "tvmflow"
# bench.probe_main after the import the loader made before it ran without the tvm package
WITH_TVM_PROBE = (
    "import os; os.environ['TVM_USE_RUNTIME_LIB'] = '1'; import tvm; "
    "from tvmflow.bench import probe_main; probe_main()"
)


def format_1_twin(onnx_path: Path, shapes: dict, v2: Path, v1: Path) -> None:
    """The same lowering with its weights bound back into the library (format 1)."""
    import tvm
    from tvm import relax

    from tvmflow.export import export_library
    from tvmflow.frontend import load_onnx
    from tvmflow.lowering import LoweringOptions, build, lower
    from tvmflow.targets import resolve_preset

    data = json.loads((v2 / "manifest.json").read_text())
    preset = resolve_preset(data["preset"])
    lowered = lower(load_onnx(onnx_path, shapes), preset, LoweringOptions())
    params = {f"weight{i}": tvm.runtime.tensor(w) for i, w in enumerate(lowered.weights)}
    target = tvm.target.Target(preset.target)
    v1.mkdir(parents=True, exist_ok=True)
    mod = relax.transform.BindParams("main", params)(lowered.mod)
    export_library(build(mod, target), preset, target, v1 / "model.so")
    del data["weights"]
    data |= {"format_version": 1, "library_sha256": sha256_file(v1 / "model.so")}
    (v1 / "manifest.json").write_text(json.dumps(data))


def static_plan_twin(onnx_path: Path, shapes: dict, v2: Path, out: Path) -> None:
    """The same lowering built by TVM's default pipeline: intermediates in the storages
    StaticPlanBlockMemory planned, not in tvmflow's arena."""
    import shutil

    import tvm
    from tvm import relax

    from tvmflow.export import codegen_scope, export_library
    from tvmflow.frontend import load_onnx
    from tvmflow.lowering import LoweringOptions, empty_constants_allocated, lower
    from tvmflow.targets import resolve_preset

    data = json.loads((v2 / "manifest.json").read_text())
    preset = resolve_preset(data["preset"])
    lowered = lower(load_onnx(onnx_path, shapes), preset, LoweringOptions())
    target = tvm.target.Target(preset.target)
    shutil.copytree(v2, out)  # the same weights file and manifest, another library
    with codegen_scope(target):
        executable = relax.build(empty_constants_allocated(lowered.mod), target=target)
    export_library(executable, preset, target, out / "model.so")
    data["library_sha256"] = sha256_file(out / "model.so")
    (out / "manifest.json").write_text(json.dumps(data))


def max_difference(a: Path, b: Path) -> float:
    """Largest absolute difference of two artifacts' outputs on the same seeded inputs."""
    first, second = tvmflow.load(a), tvmflow.load(b)
    feeds = random_inputs(first.inputs, 0)
    x, y = first.run(feeds), second.run(feeds)
    return max(float(np.max(np.abs(x[k].astype(np.float64) - y[k]))) for k in x)


def probe_with_tvm(spec: EngineSpec, feeds: Path) -> tuple[float, float]:
    """`bench.probe_memory` of a tvmflow artifact in a process that imported tvm first."""
    request = json.dumps({"spec": dataclasses.asdict(spec), "feeds": str(feeds)})
    proc = subprocess.run(
        [sys.executable, "-c", WITH_TVM_PROBE],
        input=request,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(result["base_rss_mb"]), float(result["peak_rss_mb"])


def run_rss_mb(directory: Path) -> float:
    proc = subprocess.run(
        ["/usr/bin/time", "-v", str(TVMFLOW), "run", str(directory), "--random"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return int(found.group(1)) / 1024 if found else float("nan")


def cpu_ms(v1: Path, v2: Path, seconds: float) -> tuple[float, float]:
    """Median CPU time per run of each, interleaved, one TVM thread."""
    models = {k: tvmflow.load(d, num_threads=1) for k, d in (("v1", v1), ("v2", v2))}
    args = models["v1"].device_inputs(random_inputs(models["v1"].inputs, 0))
    times: dict[str, list[float]] = {"v1": [], "v2": []}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for key, model in models.items():
            for _ in range(3):
                start = time.thread_time()
                model.run_on_device(args)
                times[key].append(time.thread_time() - start)
    return statistics.median(times["v1"]) * 1e3, statistics.median(times["v2"]) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", help="comma-separated subset of the reference set")
    parser.add_argument(
        "--format-1", action="store_true", help="also measure the format-1 twin and CPU time"
    )
    parser.add_argument(
        "--static-plan",
        action="store_true",
        help="also time the twin without the arena (StaticPlanBlockMemory alone)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="timing per model")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tvmflow-wm")
    args = parser.parse_args()
    chosen = args.models.split(",") if args.models else [r.name for r in benchmark.REFERENCE_SET]
    head = [
        "model",
        "weights MB",
        "peak RSS MB: tvmflow",
        "tvmflow after `import tvm`",
        "onnxruntime",
        "openvino",
        "RSS after imports MB: tvmflow",
        "tvmflow after `import tvm`",
        "onnxruntime",
        "`tvmflow run` max RSS MB",
    ]
    if args.format_1:
        head += ["format 1: peak RSS MB", "`tvmflow run` MB", "CPU ms/run: format 1", "format 2"]
    if args.static_plan:
        head += ["static plan: peak RSS MB", "CPU ms/run: static plan", "arena", "max abs diff"]
    print(f"| {' | '.join(head)} |\n|" + "---|" * len(head), flush=True)
    for ref in [r for r in benchmark.REFERENCE_SET if r.name in chosen]:
        onnx_path, v1, v2 = ref.path(), args.work / f"{ref.name}-v1", args.work / f"{ref.name}-v2"
        if not (v2 / "manifest.json").is_file():
            tvmflow.compile(onnx_path, output=v2, input_shapes=ref.shapes, verify=False)
        if args.format_1 and not (v1 / "manifest.json").is_file():
            format_1_twin(onnx_path, ref.shapes, v2, v1)
        static = args.work / f"{ref.name}-static"
        if args.static_plan and not (static / "manifest.json").is_file():
            static_plan_twin(onnx_path, ref.shapes, v2, static)
        manifest = tvmflow.load(v2).manifest
        shapes = {s.name: list(s.shape) for s in manifest.inputs}
        rss: dict[str, tuple[float, float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            feeds = Path(tmp) / "feeds.npz"
            np.savez(feeds, **random_inputs(manifest.inputs, 0))  # type: ignore[arg-type]
            spec = EngineSpec("tvmflow", str(v2), 2, shapes=shapes)
            rss["tvmflow"] = probe_memory(spec, feeds)
            rss["with_tvm"] = probe_with_tvm(spec, feeds)
            for kind in ("onnxruntime", "openvino"):
                rss[kind] = probe_memory(EngineSpec(kind, str(onnx_path), 2, shapes=shapes), feeds)
            if args.format_1:
                rss["v1"] = probe_memory(EngineSpec("tvmflow", str(v1), 2, shapes=shapes), feeds)
            if args.static_plan:
                spec = EngineSpec("tvmflow", str(static), 2, shapes=shapes)
                rss["static"] = probe_memory(spec, feeds)
        weights_mb = (manifest.weights.bytes if manifest.weights else 0) / 2**20
        cells = [f"{weights_mb:.1f}"]
        cells += [f"{rss[k][1]:.0f}" for k in ("tvmflow", "with_tvm", "onnxruntime", "openvino")]
        cells += [f"{rss[k][0]:.0f}" for k in ("tvmflow", "with_tvm", "onnxruntime")]
        cells.append(f"{run_rss_mb(v2):.0f}")
        if args.format_1:
            t1, t2 = cpu_ms(v1, v2, args.seconds)
            cells += [f"{rss['v1'][1]:.0f}", f"{run_rss_mb(v1):.0f}", f"{t1:.2f}", f"{t2:.2f}"]
        if args.static_plan:
            t1, t2 = cpu_ms(static, v2, args.seconds)
            diff = max_difference(static, v2)
            cells += [f"{rss['static'][1]:.0f}", f"{t1:.2f}", f"{t2:.2f}", f"{diff:.1e}"]
        print(f"| {ref.name} | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
