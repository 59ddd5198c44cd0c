"""Per-call cost of `CompiledModel.run` beside the VM call alone and onnxruntime's run.

Sub-millisecond models (wake words, VADs, decode steps) are dominated by what a call costs
around the kernels. For each artifact this times, in one process, 1 thread per engine, in
interleaved rounds: `model.run(feeds)` (checks, inputs in, the VM, outputs copied out),
`model.run_on_device(tensors)` on tensors made once (the VM's `main` alone: its bytecode,
allocations and kernels) and onnxruntime's `session.run` on the same feeds. It prints the
median µs per call of each and the ratios; `run - VM` is what the Python wrapper costs.

Artifacts are the corpus's (`.cache/corpus/artifacts/NAME`, made by `scripts/corpus --models
NAME`) or any artifact given with its ONNX file.

Usage: .venv/bin/python scripts/call_overhead.py NAME... [--artifact DIR=MODEL.onnx]...
       [--rounds N] [--round-s S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import corpus  # scripts/corpus.py (the script's folder is on sys.path): the corpus list

import tvmflow
from tvmflow.engines import onnxruntime_session
from tvmflow.inputs import random_inputs


def per_call_us(fn: Callable[[], Any], seconds: float) -> float:
    """µs per call of `fn` over a batch of calls lasting about `seconds`."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls * 1e6


def measure(artifact: Path, model: Path, rounds: int, round_s: float) -> dict[str, float]:
    """Median µs per call of run(), the VM alone and onnxruntime, interleaved by round."""
    loaded = tvmflow.load(artifact, num_threads=1)
    feeds = random_inputs(loaded.inputs, seed=0)
    frozen = {f.spec.name: f.array() for f in loaded.frozen}  # the ONNX file still takes them
    session = onnxruntime_session(model, threads=1)
    tensors = loaded.device_inputs(feeds)
    engines: dict[str, Callable[[], Any]] = {
        "run": lambda: loaded.run(feeds),
        "vm": lambda: loaded.run_on_device(tensors),
        "onnxruntime": lambda: session.run(None, {**feeds, **frozen}),
    }
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for fn in engines.values():  # warm up: first calls allocate pools and caches
        per_call_us(fn, round_s / 4)
    for r in range(rounds):
        names = list(engines)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            samples[name].append(per_call_us(engines[name], round_s))
    return {name: statistics.median(values) for name, values in samples.items()}


def _targets(args: argparse.Namespace) -> list[tuple[str, Path, Path]]:
    entries = {e.name: e for e in corpus.load_list()[0]}
    out = []
    for name in args.names:
        if name not in entries:
            raise SystemExit(f"call_overhead: {name} is not in scripts/corpus.toml")
        art = corpus.CORPUS / "artifacts" / name
        if not (art / "manifest.json").is_file():
            raise SystemExit(f"call_overhead: no {art}: run scripts/corpus --models {name}")
        out.append((name, art, entries[name].path))
    for pair in args.artifact:
        directory, _, model = pair.partition("=")
        out.append((Path(directory).name, Path(directory), Path(model)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="corpus model names")
    parser.add_argument("--artifact", action="append", default=[], help="DIR=MODEL.onnx")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--round-s", type=float, default=0.3, help="seconds per engine a round")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    header = f"{'model':28s} {'run µs':>9s} {'VM µs':>9s} {'ort µs':>9s} {'run-VM':>8s}"
    print(header + f" {'run/VM':>7s} {'run/ort':>8s} {'VM/ort':>7s}")
    rows = {}
    for name, artifact, model in _targets(args):
        t = measure(artifact, model, args.rounds, args.round_s)
        rows[name] = t
        print(
            f"{name:28s} {t['run']:9.1f} {t['vm']:9.1f} {t['onnxruntime']:9.1f} "
            f"{t['run'] - t['vm']:8.1f} {t['run'] / t['vm']:7.2f} "
            f"{t['run'] / t['onnxruntime']:8.2f} {t['vm'] / t['onnxruntime']:7.2f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
