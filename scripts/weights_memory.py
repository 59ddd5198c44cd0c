"""Weights outside the library, measured: format 1 (weights embedded in model.so) against
format 2 (weights.npz, mapped once) of the same lowering, beside onnxruntime and OpenVINO.

For each reference model (scripts/benchmark's set) it compiles the artifact, builds the
format-1 twin from the same lowering (the weights bound back as constants), then reports in
one run: peak RSS of load + first run in a fresh process per engine (`tvmflow.bench`'s probe,
the benchmark's RSS column), `/usr/bin/time -v tvmflow run` of both artifacts, and CPU time
per run of both (1 TVM thread, the calling thread's CPU time, interleaved: robust on a busy
machine). Usage: .venv/bin/python scripts/weights_memory.py [--models a,b] [--seconds S]
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--seconds", type=float, default=20.0, help="timing per model")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tvmflow-wm")
    args = parser.parse_args()
    chosen = args.models.split(",") if args.models else [r.name for r in benchmark.REFERENCE_SET]
    print(
        "| model | weights MB | peak RSS MB: format 1 | format 2 | onnxruntime | openvino "
        "| `tvmflow run` max RSS MB: format 1 | format 2 | CPU ms/run: format 1 | format 2 "
        "| format 2 / 1 |\n|" + "---|" * 11,
        flush=True,
    )
    for ref in [r for r in benchmark.REFERENCE_SET if r.name in chosen]:
        onnx_path, v1, v2 = ref.path(), args.work / f"{ref.name}-v1", args.work / f"{ref.name}-v2"
        if not (v2 / "manifest.json").is_file():
            tvmflow.compile(onnx_path, output=v2, input_shapes=ref.shapes, verify=False)
        if not (v1 / "manifest.json").is_file():
            format_1_twin(onnx_path, ref.shapes, v2, v1)
        manifest = tvmflow.load(v2).manifest
        shapes = {s.name: list(s.shape) for s in manifest.inputs}
        peak = {}
        with tempfile.TemporaryDirectory() as tmp:
            feeds = Path(tmp) / "feeds.npz"
            np.savez(feeds, **random_inputs(manifest.inputs, 0))  # type: ignore[arg-type]
            engines = (("v1", "tvmflow", v1), ("v2", "tvmflow", v2))
            engines += (("ort", "onnxruntime", onnx_path), ("ov", "openvino", onnx_path))
            for key, kind, path in engines:
                peak[key] = probe_memory(EngineSpec(kind, str(path), 2, shapes=shapes), feeds)[1]
        t1, t2 = cpu_ms(v1, v2, args.seconds)
        weights_mb = (manifest.weights.bytes if manifest.weights else 0) / 2**20
        print(
            f"| {ref.name} | {weights_mb:.1f} | {peak['v1']:.0f} | {peak['v2']:.0f} "
            f"| {peak['ort']:.0f} | {peak['ov']:.0f} | {run_rss_mb(v1):.0f} | {run_rss_mb(v2):.0f} "
            f"| {t1:.2f} | {t2:.2f} | {t2 / t1:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
