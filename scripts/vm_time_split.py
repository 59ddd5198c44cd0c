"""Where a compiled model's call spends its CPU time: kernels or the VM around them (`perf`).

`scripts/levers`' `call overhead` class is what a model's p50 has beyond its kernels timed in
place; it holds what the timing cannot resolve (hook costs, replayed small kernels) besides
the VM's own time. This measures the VM's own time without instrumenting anything: a child
process loads the artifact with `tvmflow.load` (the production runtime), calls the VM's
`main` in a loop on tensors made once (`run_on_device`, 1 thread) while `perf record` samples
it, and the samples of the calling thread are split by where they landed: the model library
(`model.so`: the kernels; also libc's memcpy/memset, which the kernels call), TVM's runtime,
tvm_ffi and the rest of libc (the VM: bytecode dispatch, allocations, workspace), Python, and
the OS kernel
(interrupts, scheduling: mostly other processes' doing on a shared machine).

Usage: .venv/bin/python scripts/vm_time_split.py DIR... [--seconds S] [--json FILE]
(DIR: an artifact directory; needs `perf` and permission to attach to a child process)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

# where a sample's shared object puts it; the first match wins, anything else is "other"
PARTS = (
    ("kernels", ("model.so",)),
    ("vm", ("libtvm_runtime", "libtvm_ffi", "core.cpython", "libstdc++", "libc.so")),
    ("python", ("libpython", "python3")),
    ("os", ("[kernel.kallsyms]",)),
)
KERNEL_LIBC = ("memmove", "memcpy", "memset")  # libc functions the kernels call


def part_of(dso: str, symbol: str) -> str:
    """The part a sample in `symbol` of `dso` counts for."""
    if "libc.so" in dso and any(k in symbol for k in KERNEL_LIBC):
        return "kernels"
    return next((name for name, keys in PARTS if any(k in dso for k in keys)), "other")


CHILD = """
import sys, threading, time
import tvmflow
from tvmflow.inputs import random_inputs
m = tvmflow.load(sys.argv[1], num_threads=1)
tensors = m.device_inputs(random_inputs(m.inputs, seed=0))
for _ in range(3):
    m.run_on_device(tensors)
time.sleep(0.5)  # the thread pool's worker spins a while after it is configured
print(threading.get_native_id(), flush=True)
sys.stdin.readline()  # the parent attached perf
calls, start_cpu, start = 0, time.process_time(), time.perf_counter()
while time.perf_counter() - start < float(sys.argv[2]):
    m.run_on_device(tensors)
    calls += 1
print(calls, (time.process_time() - start_cpu) / calls, flush=True)
sys.stdin.readline()  # exit (interpreter teardown) only once perf has stopped
"""


def split(report: str, tid: int) -> dict[str, float]:
    """Shares of the thread `tid`'s samples per part, from `perf report --sort pid,dso,sym`
    text (lines like `  1.17%  3336:python  libc.so.6  [.] __memmove_avx512_unaligned_erms`)."""
    shares: dict[str, float] = {}
    for line in report.splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].endswith("%") or ":" not in fields[1]:
            continue
        if fields[1].split(":")[0] != str(tid):
            continue
        part = part_of(fields[2], " ".join(fields[3:]))
        shares[part] = shares.get(part, 0.0) + float(fields[0].rstrip("%"))
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items()} if total else {}


def measure(directory: Path, seconds: float) -> dict[str, float]:
    """CPU ms per call and the calling thread's sample shares per part, for one artifact."""
    with tempfile.TemporaryDirectory(prefix="vm-split-") as scratch:
        data = Path(scratch) / "perf.data"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(directory), str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        first = child.stdout.readline().strip()
        if not first.isdigit():  # the artifact did not load (tvmflow's one-line reason last)
            lines = child.communicate()[1].strip().splitlines() or ["the child process failed"]
            raise MeasureError(f"{directory}: {lines[-1]}")
        tid = int(first)
        perf = subprocess.Popen(
            ["perf", "record", "-q", "-F", "2000", "-p", str(child.pid), "-o", str(data)],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # perf attaches
        child.stdin.write("\n")
        child.stdin.flush()
        calls, cpu_per_call = child.stdout.readline().split()
        perf.send_signal(2)  # SIGINT: perf writes its data and exits
        perf.wait()
        child.communicate("\n")
        done = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-s", "pid,dso,sym"],
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise MeasureError(f"perf could not sample {directory}: {done.stderr.strip()[-200:]}")
    return {"calls": int(calls), "cpu_ms": float(cpu_per_call) * 1e3, **split(done.stdout, tid)}


class MeasureError(Exception):
    """The artifact does not load, or perf may not sample the child (permissions, a
    container without perf events)."""


def table(rows: dict[str, dict[str, float]]) -> Iterable[str]:
    parts = [name for name, _ in PARTS] + ["other"]
    yield f"{'model':<24} {'CPU ms/call':>11} " + " ".join(f"{p:>8}" for p in parts)
    for name, row in rows.items():
        shares = " ".join(f"{row.get(p, 0.0):8.1%}" for p in parts)
        yield f"{name:<24} {row['cpu_ms']:11.3f} {shares}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, default=5.0, help="sampled loop per artifact")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        print("perf is not installed: apt-get install linux-perf", file=sys.stderr)
        return 2
    rows = {}
    for directory in args.artifacts:
        try:
            rows[directory.name] = measure(directory, args.seconds)
        except MeasureError as exc:
            print(exc, file=sys.stderr)
            return 2
    print("\n".join(table(rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
