"""Serving load test: `tvmflow serve` vs the same server running onnxruntime, side by side.

Run through `scripts/serve-load`. Each reference model (scripts/benchmark.py's set) is
compiled for the target preset, then served twice by `tvmflow serve` — once with the tvmflow
engine, once with `--engine onnxruntime` on the same ONNX file: same server, same protocol,
same thread budget. A closed-loop gRPC client (tritonclient's asyncio client, binary tensors)
keeps 1, 8 and 32 requests in flight for a fixed time at each level and records every
latency. Writes a markdown table (throughput, p50, p99 and the tvmflow/onnxruntime ratios)
to benchmarks/serve.md. The client runs on the same machine as the server, as a single
process; the table says how many CPUs that machine has.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcclient
from benchmark import CACHE, REFERENCE_SET, ROOT, Reference
from tritonclient.utils import np_to_triton_dtype

from tvmflow import bench
from tvmflow.errors import TvmflowError
from tvmflow.inputs import random_inputs
from tvmflow.manifest import read_manifest, sha256_file
from tvmflow.targets import resolve_preset

ENGINES = ("tvmflow", "onnxruntime")
TVMFLOW = Path(sys.executable).parent / "tvmflow"


@dataclass(frozen=True)
class Level:
    """One measurement: an engine and a worker count at a number of concurrent clients."""

    model: str
    engine: str
    workers: int
    threads: int
    clients: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [r.name for r in REFERENCE_SET]
    single = [n for n in names if not n.endswith("-b8")]  # one request = one sample
    cpus = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(prog="scripts/serve-load", description=__doc__)
    parser.add_argument(
        "--models", help=f"comma-separated subset of {','.join(names)} (default: batch 1 ones)"
    )
    parser.add_argument("--target", default="x86", help="target preset (default: x86)")
    parser.add_argument(
        "--clients", default="1,8,32", help="concurrent client levels (default: 1,8,32)"
    )
    parser.add_argument(
        "--workers",
        default=",".join(str(w) for w in sorted({1, max(1, cpus // 2), cpus})),
        help="server --workers values to compare (the thread split; default: 1, CPUs/2, CPUs)",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per level")
    parser.add_argument("--rounds", type=int, default=3, help="turns per engine and level")
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed seconds per turn")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "serve.md")
    args = parser.parse_args(argv)
    chosen = args.models.split(",") if args.models else single
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    args.models = [r for r in REFERENCE_SET if r.name in chosen]
    args.clients = [int(c) for c in args.clients.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    return args


def artifact_for(ref: Reference, preset: str) -> tuple[Path, Path]:
    """(ONNX file, artifact): compiled once per model, preset and tvmflow version."""
    model = ref.path()
    out = CACHE / "serve-load" / preset / ref.name
    manifest = out / "manifest.json"
    if manifest.is_file() and read_manifest(out).onnx_sha256 == sha256_file(model):
        return model, out
    if out.exists():
        out.rename(out.with_name(f"{ref.name}.stale-{int(time.time())}"))
    print(f"== {ref.name}: compiling for {preset}", flush=True)
    artifact, seconds = bench.compile_for_bench(model, preset, out, ref.shapes)
    print(f"   compiled in {seconds:.0f} s", flush=True)
    return model, artifact


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    name: str, artifact: Path, onnx: Path, engine: str, workers: int
) -> tuple[subprocess.Popen[bytes], int]:
    grpc_port = _free_port()
    cmd = [str(TVMFLOW), "serve", f"{name}={artifact}", "--engine", engine]
    cmd += ["--http-port", str(_free_port()), "--grpc-port", str(grpc_port)]
    cmd += ["--workers", str(workers), "--onnx", f"{name}={onnx}"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL), grpc_port


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TvmflowError(f"the server exited with code {proc.returncode}")
            try:
                if await client.is_server_ready():
                    return
            except Exception:
                pass
            await asyncio.sleep(0.3)
        raise TvmflowError("the server did not become ready in 300 s")
    finally:
        await client.close()


async def closed_loop(
    url: str, name: str, inputs: list[grpcclient.InferInput], clients: int, seconds: float
) -> list[float]:
    """`clients` requests in flight for `seconds`; the latency of each answered request."""
    client = grpcclient.InferenceServerClient(url)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def one_client() -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            await client.infer(name, inputs)
            latencies.append(time.perf_counter() - start)

    try:
        await asyncio.gather(*(one_client() for _ in range(clients)))
    finally:
        await client.close()
    return latencies


async def measure_pair(
    name: str, artifact: Path, onnx: Path, workers: int, args: argparse.Namespace
) -> list[Level]:
    """Both engines' servers up at once; at each client level the engines take turns in
    `--rounds` slices, so a change in the machine's load hits both alike."""
    servers = {e: start_server(name, artifact, onnx, e, workers) for e in ENGINES}
    cpus = len(os.sched_getaffinity(0))
    levels = []
    try:
        urls = {e: f"127.0.0.1:{port}" for e, (_, port) in servers.items()}
        for engine, (proc, _) in servers.items():
            await wait_ready(urls[engine], proc)
        inputs = make_inputs(artifact)
        for clients in args.clients:
            latencies: dict[str, list[float]] = {e: [] for e in ENGINES}
            elapsed = dict.fromkeys(ENGINES, 0.0)
            for turn in range(args.rounds):
                for engine in ENGINES[:: 1 if turn % 2 == 0 else -1]:
                    await closed_loop(urls[engine], name, inputs, clients, args.warmup)
                    started = time.perf_counter()
                    latencies[engine] += await closed_loop(
                        urls[engine], name, inputs, clients, args.seconds / args.rounds
                    )
                    elapsed[engine] += time.perf_counter() - started
            for engine in ENGINES:
                ms = np.array(latencies[engine]) * 1e3
                level = Level(
                    name,
                    engine,
                    workers,
                    max(1, cpus // workers),
                    clients,
                    len(ms),
                    elapsed[engine],
                    float(np.percentile(ms, 50)),
                    float(np.percentile(ms, 99)),
                )
                print(
                    f"   {engine:<11} workers {workers:>2} clients {clients:>2}: "
                    f"{level.throughput:8.1f} req/s  p50 {level.p50_ms:7.2f} ms  "
                    f"p99 {level.p99_ms:7.2f} ms",
                    flush=True,
                )
                levels.append(level)
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in servers.values():
            proc.wait(timeout=120)
    return levels


def make_inputs(artifact: Path) -> list[grpcclient.InferInput]:
    """Seeded inputs at the artifact's signature, as binary gRPC tensors."""
    specs = read_manifest(artifact).inputs
    tensors = []
    for spec, array in zip(specs, random_inputs(specs, seed=0).values(), strict=True):
        tensor = grpcclient.InferInput(spec.name, list(spec.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def markdown(levels: Sequence[Level], machine: dict[str, object]) -> str:
    rows = [
        "| model | server --workers × TVM threads | clients | tvmflow req/s | onnxruntime req/s "
        "| req/s ratio | tvmflow p50 / p99 ms | onnxruntime p50 / p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    keyed = {(lv.model, lv.engine, lv.workers, lv.clients): lv for lv in levels}
    for lv in levels:
        if lv.engine != "tvmflow":
            continue
        ort = keyed.get((lv.model, "onnxruntime", lv.workers, lv.clients))
        if ort is None:
            continue
        rows.append(
            f"| {lv.model} | {lv.workers} × {lv.threads} | {lv.clients} | "
            f"{lv.throughput:.1f} | {ort.throughput:.1f} | "
            f"{lv.throughput / ort.throughput:.2f}x | {lv.p50_ms:.2f} / {lv.p99_ms:.2f} | "
            f"{ort.p50_ms:.2f} / {ort.p99_ms:.2f} |"
        )
    versions = machine["versions"]
    load = machine["load"]
    head = (
        f"Machine: {machine['cpu']}, {machine['cores_available']} CPUs available "
        f"({machine['physical_cores']} physical cores), {machine['memory_gb']} GB; "
        f"{machine['date']}; versions {versions}. Load average (1 min) at the start and the "
        f"end of the run: {load[0]:.1f} and {load[1]:.1f} (above the CPU count: other "
        "processes competed for the CPUs, which hits latencies and the multi-thread "
        "settings hardest).\n\n"
    )
    return head + "\n".join(rows) + "\n\n" + split_table(levels)


def split_table(levels: Sequence[Level]) -> str:
    """Which --workers gave each engine the most requests per second, per model and level."""
    best: dict[tuple[str, str, int], Level] = {}
    for lv in levels:
        key = (lv.model, lv.engine, lv.clients)
        if key not in best or lv.throughput > best[key].throughput:
            best[key] = lv
    splits = sorted({lv.workers for lv in levels})
    rows = [
        "Thread split: the `--workers` (× TVM threads) with the most req/s, and each split's "
        "req/s.\n",
        "| model | engine | clients | best | " + " | ".join(f"{w} workers" for w in splits) + " |",
        "| --- | --- | ---: | --- |" + " ---: |" * len(splits),
    ]
    keyed = {(lv.model, lv.engine, lv.clients, lv.workers): lv for lv in levels}
    for (model, engine, clients), top in best.items():
        cells = [
            f"{keyed[(model, engine, clients, w)].throughput:.1f}"
            if (model, engine, clients, w) in keyed
            else "-"
            for w in splits
        ]
        rows.append(
            f"| {model} | {engine} | {clients} | {top.workers} × {top.threads} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(rows) + "\n"


async def run(args: argparse.Namespace) -> list[Level]:
    preset = resolve_preset(args.target).name
    levels: list[Level] = []
    for ref in args.models:
        onnx, artifact = artifact_for(ref, preset)
        print(f"== {ref.name}: serving {artifact}", flush=True)
        for workers in args.workers:
            levels += await measure_pair(ref.name, artifact, onnx, workers, args)
    return levels


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers this started are stopped too
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    load_before = os.getloadavg()[0]
    try:
        levels = asyncio.run(run(args))
    except TvmflowError as exc:
        print(f"scripts/serve-load: error: {exc}", file=sys.stderr)
        return exc.exit_code
    machine = bench.machine_info(len(os.sched_getaffinity(0)))
    machine["load"] = (load_before, os.getloadavg()[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    title = "# Serving: `tvmflow serve` vs the same server on onnxruntime\n\n"
    method = (
        "Written by `scripts/serve-load`: gRPC, binary tensors, a closed loop of N clients "
        f"for {args.seconds:g} s per engine and level, in {args.rounds} turns that alternate "
        f"between the engines (each after {args.warmup:g} s of warm-up); client and servers "
        "on the same machine. Both engines run in `tvmflow serve` (`--engine onnxruntime` "
        "serves the artifact's own ONNX file) with the same thread budget: W workers, each "
        "with CPUs/W threads (TVM's pool per worker; onnxruntime's intra-op threads).\n\n"
    )
    args.out.write_text(title + method + markdown(levels, machine))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
