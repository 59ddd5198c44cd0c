"""Measure what tuning buys: tune zoo models, then time tuned, untuned and onnxruntime together.

    .venv/bin/python scripts/tune_speedup.py conv_net resnet_block --trials 64 --workdir /tmp/ts
    nice .venv/bin/python scripts/tune_speedup.py resnet18 --time-limit 25 --trials 100000

For each model: `tune_model` with the given budget or time limit (trials/s is its own
measurement; a rerun resumes the log in the work directory), then compile it twice (with only
this log and with no log at all, both verified against onnxruntime) and time the two artifacts
and onnxruntime in interleaved rounds in this one process, so machine load hits all three
alike. Prints a table and writes `report.json` in the work directory.

Transfer: `--log DIR` skips tuning and compiles with that log instead (e.g. ResNet-18's log on
a ResNet-34 export); a model may be an .onnx path, its shapes given with --input-shape.

    .venv/bin/python scripts/tune_speedup.py .cache/models/resnet34.onnx \
        --input-shape image=1,3,224,224 --log tuning_logs/x86-avx512/resnet18
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import tvmflow.compile  # noqa: F401 - the compiler must load before the runtime-only loader
from tvmflow import zoo
from tvmflow.compile import CompileOptions, compile_model
from tvmflow.frontend import load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.targets import resolve_preset
from tvmflow.tune import TuneOptions, tune_model

SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "mlp": {"x": (4, 64)},
    "conv_net": {"image": (2, 3, 32, 32)},
    "resnet_block": {"image": (1, 3, 64, 64)},
    "resnet18": {"image": (1, 3, 224, 224)},
    "mobilenet_v2": {"image": (1, 3, 224, 224)},
    "encoder": {},
}


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, dims = text.split("=")
    return name, tuple(int(d) for d in dims.split(","))


def _round_ms(fn: Callable[[], Any], runs: int) -> float:
    """Mean latency (ms) of one round; the caller interleaves rounds of several runners."""
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) * 1e3 / runs


def measure(model: str, args: argparse.Namespace) -> dict[str, Any]:
    from tvmflow.engines import onnxruntime_session
    from tvmflow.runtime import load

    if model in SHAPES:
        work = Path(args.workdir) / model
        path, shapes = zoo.save(model, work), SHAPES[model]
    else:
        path = Path(model)
        work = Path(args.workdir) / path.stem
        shapes = dict(_shape(s) for s in args.input_shape)
    imported = load_onnx(path, shapes)
    preset = resolve_preset(args.target)
    log = Path(args.log) if args.log else work / "log"
    result = None
    if not args.log:
        options = TuneOptions(
            trials=args.trials,
            batch_size=args.batch_size,
            population=args.population,
            time_limit_s=args.time_limit * 60 if args.time_limit else None,
        )
        result = tune_model(imported, preset, log, options)
    tuned = compile_model(
        imported,
        preset,
        work / "tuned",
        CompileOptions(tuning_logs=(log,), use_shipped_logs=False),
    )
    untuned = compile_model(
        imported, preset, work / "untuned", CompileOptions(use_shipped_logs=False)
    )
    feeds = random_inputs(imported.inputs, 0)
    cores = int(preset.target.get("num-cores", 1))
    session = onnxruntime_session(path, cores)
    runners: dict[str, Callable[[], Any]] = {
        "tvmflow tuned": functools.partial(load(tuned.directory).run, feeds),
        "tvmflow untuned": functools.partial(load(untuned.directory).run, feeds),
        "onnxruntime": functools.partial(session.run, None, feeds),
    }
    for fn in runners.values():  # warm up
        for _ in range(20):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, fn in runners.items():
            samples[name].append(_round_ms(fn, args.per_round))
    ms = {name: statistics.median(v) for name, v in samples.items()}
    return {
        "model": path.stem,
        "shapes": {k: list(v) for k, v in shapes.items()},
        "preset": preset.name,
        "log": str(log),
        "trials": result.trials if result else 0,
        "tuning_seconds": round(result.seconds, 1) if result else 0.0,
        "trials_per_second": round(result.trials_per_second or 0.0, 3) if result else 0.0,
        "tasks_tuned": f"{tuned.manifest.tuning.tasks_tuned}/{tuned.manifest.tuning.tasks_total}",
        "estimated_speedup": (
            round((result.untuned_us or 0) / (result.estimated_us or 1), 2) if result else None
        ),
        "latency_ms": {k: round(v, 4) for k, v in ms.items()},
        "speedup_tuned_vs_untuned": round(ms["tvmflow untuned"] / ms["tvmflow tuned"], 2),
        "tuned_vs_onnxruntime": round(ms["onnxruntime"] / ms["tvmflow tuned"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help=f"zoo names ({', '.join(SHAPES)}) or .onnx")
    parser.add_argument("--input-shape", action="append", default=[], help="NAME=1,3,224,224")
    parser.add_argument("--log", help="compile with this tuning log instead of tuning")
    parser.add_argument("--target", default="x86", help="preset to tune and compile for")
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--time-limit", type=float, help="minutes of tuning per model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--population", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--workdir", default=".cache/tune-speedup")
    args = parser.parse_args()
    np.random.seed(0)
    reports = [measure(m, args) for m in args.models]
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    (Path(args.workdir) / "report.json").write_text(json.dumps(reports, indent=2) + "\n")
    print(f"{'model':<14} {'trials':>6} {'trials/s':>8} {'tuned ms':>9} {'untuned ms':>10} "
          f"{'ort ms':>8} {'untuned/tuned':>13} {'vs ort':>7} tasks tuned")  # fmt: skip
    for r in reports:
        lat = r["latency_ms"]
        print(
            f"{r['model']:<14} {r['trials']:>6} {r['trials_per_second']:>8.3f} "
            f"{lat['tvmflow tuned']:>9.4f} {lat['tvmflow untuned']:>10.4f} "
            f"{lat['onnxruntime']:>8.4f} {r['speedup_tuned_vs_untuned']:>12.2f}x "
            f"{r['tuned_vs_onnxruntime']:>6.2f}x {r['tasks_tuned']}"
        )


if __name__ == "__main__":
    main()
