"""Bench reports: what `tvmflow bench` and scripts/benchmark print and write.

The terminal table, the markdown tables (README and benchmarks/), the JSON document and the
latency plot of `BenchReport`s, kept apart from measuring them (`tvmflow.bench`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tvmflow.bench import BenchReport, EngineAccuracy, EngineStats, RatioCI
from tvmflow.engines import REFERENCE, TVMFLOW
from tvmflow.errors import TvmflowError


def source_commit(root: Path) -> str:
    """The commit of the checkout at `root` a measurement ran with, `+dirty` when tvmflow/ has
    uncommitted changes (benchmark rows say what code they measured)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", "tvmflow")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def reports_json(reports: Sequence[BenchReport]) -> dict[str, Any]:
    """One JSON document for one or several models measured on the same machine."""
    return {
        "format_version": 1,
        "machine": _finite(reports[0].machine) if reports else {},
        "results": [report_json(r) for r in reports],
    }


def write_json(reports: Sequence[BenchReport], path: Path) -> None:
    from tvmflow.manifest import write_atomic

    text = json.dumps(reports_json(reports), indent=2, allow_nan=False) + "\n"
    write_atomic(Path(path), text.encode())


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 10 ** (digits) else f"{value:.0f}"


def _ratio_text(r: RatioCI) -> str:
    return f"{r.p50_ratio:.2f}x [{r.ci_low:.2f}, {r.ci_high:.2f}]"


def _accuracy_text(a: EngineAccuracy) -> str:
    worst_abs = max((o.max_abs_err for o in a.outputs), default=0.0)
    worst_cos = min((o.cosine for o in a.outputs), default=1.0)
    if a.engine == TVMFLOW:
        verdict = "pass" if a.passed else f"FAIL ({', '.join(a.failing)})"
    else:  # reported, not judged: a comparator's disagreement is not tvmflow's failure
        verdict = "within tolerance" if a.passed else f"beyond tolerance ({', '.join(a.failing)})"
    return f"{verdict}: max abs {worst_abs:.2e}, cosine {worst_cos:.6f}"


def machine_line(machine: Mapping[str, Any]) -> str:
    v = machine.get("versions", {})
    engines = ", ".join(f"{k} {val}" for k, val in v.items() if k != "python" and val)
    return (
        f"{machine.get('cpu')}, {machine.get('physical_cores')} physical cores "
        f"({machine.get('cores_available')} available), {machine.get('threads_used')} threads "
        f"per engine, {machine.get('memory_gb')} GB RAM; {engines}; Python {v.get('python')}; "
        f"{machine.get('date')}"
    )


def format_table(report: BenchReport) -> str:
    """The terminal view of one report."""
    head = (
        f"{'engine':<16} {'prec':<5} {'load s':>7} {'1st ms':>8} {'mean ms':>9} {'std':>7} "
        f"{'min':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'runs/s':>8} {'RSS MB':>7} {'runs':>6}"
    )
    lines = [
        f"{report.label} ({', '.join(s.describe() for s in report.inputs)}) on "
        f"{report.preset}, {report.threads} threads",
        head,
        "-" * len(head),
    ]
    for e in report.engines:
        lines.append(
            f"{e.name:<16} {e.precision:<5} {_fmt(e.load_s):>7} {_fmt(e.first_run_ms):>8} "
            f"{_fmt(e.mean_ms):>9} {_fmt(e.std_ms):>7} {_fmt(e.min_ms):>8} {_fmt(e.p50_ms):>8} "
            f"{_fmt(e.p90_ms):>8} {_fmt(e.p99_ms):>8} {_fmt(e.throughput_per_s):>8} "
            f"{_fmt(e.peak_rss_mb):>7} {e.runs:>6}"
        )
    compile_s = report.engine(TVMFLOW).compile_s
    if compile_s is not None:
        lines.append(f"tvmflow compile: {compile_s:.1f} s")
    for r in report.ratios:
        lines.append(f"p50 {r.engine}/{r.baseline}: {_ratio_text(r)} (95% bootstrap CI)")
    best = report.best_peer
    if best is not None:
        lines.append(f"p50 tvmflow/{report.peer_label} ({best.baseline}): {_ratio_text(best)}")
    for a in report.accuracy:
        lines.append(f"accuracy {a.engine} vs {REFERENCE}: {_accuracy_text(a)}")
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def to_markdown(reports: Sequence[BenchReport]) -> str:
    """A summary table (one row per model) and a per-engine detail table."""
    if not reports:
        return ""
    baselines = [r.baseline for r in reports[0].ratios]
    summary_head = ["model", "inputs", "preset", "tuned kernels", "compile s", "tvmflow p50 ms"]
    for b in baselines:
        summary_head += [f"{b} p50 ms", f"tvmflow/{b} p50 [95% CI]"]
    has_peer = any(rep.best_peer for rep in reports)
    if has_peer:
        summary_head.append(f"tvmflow/{reports[0].peer_label}")
    summary_head.append("tvmflow accuracy vs onnxruntime")
    rows = []
    for rep in reports:
        tvm = rep.engine(TVMFLOW)
        row = [
            rep.label,
            "<br>".join(s.describe() for s in rep.inputs),
            rep.preset,
            f"{rep.tuning.get('tasks_tuned')}/{rep.tuning.get('tasks_total')}",
            _fmt(tvm.compile_s),
            _fmt(tvm.p50_ms),
        ]
        for b in baselines:
            row += [_fmt(rep.engine(b).p50_ms), _ratio_text(rep.ratio(b))]
        if has_peer:
            best = rep.best_peer
            row.append(f"**{best.p50_ratio:.2f}x** ({best.baseline})" if best else "-")
        row.append(next(_accuracy_text(a) for a in rep.accuracy if a.engine == TVMFLOW))
        rows.append(row)
    detail_head = [
        "model",
        "engine",
        "setup",
        "precision",
        "load s",
        "first run ms",
        "mean ± std ms",
        "min ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "runs/s",
        "peak RSS MB",
        "runs",
    ]
    details = [
        [
            rep.label,
            e.name,
            e.detail,
            e.precision,
            _fmt(e.load_s),
            _fmt(e.first_run_ms),
            f"{_fmt(e.mean_ms)} ± {_fmt(e.std_ms)}",
            _fmt(e.min_ms),
            _fmt(e.p50_ms),
            _fmt(e.p90_ms),
            _fmt(e.p99_ms),
            _fmt(e.throughput_per_s),
            _fmt(e.peak_rss_mb),
            str(e.runs),
        ]
        for rep in reports
        for e in rep.engines
    ]
    warnings = [f"- {r.label}: {w}" for r in reports for w in r.warnings]
    parts = [
        f"Machine: {machine_line(reports[0].machine)}",
        "",
        _md_table(summary_head, rows),
        "",
        _md_table(detail_head, details),
    ]
    if warnings:
        parts += ["", "Warnings:", *warnings]
    return "\n".join(parts) + "\n"


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_markdown(reports: Sequence[BenchReport], path: Path) -> None:
    from tvmflow.manifest import write_atomic

    write_atomic(Path(path), to_markdown(reports).encode())


def plot(reports: Sequence[BenchReport], path: Path) -> None:
    """Latency distributions per engine (box + every sample), one panel per model, log scale."""
    try:
        import matplotlib
    except ImportError as exc:
        raise TvmflowError("--plot needs matplotlib: pip install tvmflow[bench]") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(reports),
        1,
        figsize=(9, 1.2 + 1.1 * sum(len(r.engines) for r in reports)),
        squeeze=False,
    )
    jitter = np.random.default_rng(0)
    for ax, rep in zip(axes[:, 0], reports, strict=True):
        engines = rep.engines[::-1]  # first engine (tvmflow) on top
        data = [np.asarray(e.samples_ms) for e in engines]
        ax.boxplot(
            data,
            orientation="horizontal",
            tick_labels=[e.name for e in engines],
            whis=(1, 99),
            showfliers=False,
            medianprops={"color": "black"},
        )
        for i, values in enumerate(data, start=1):
            y = i + jitter.uniform(-0.18, 0.18, values.size)
            ax.scatter(values, y, s=4, alpha=0.35, color=f"C{len(data) - i}")
        ax.set_xscale("log")
        ratio = f"tvmflow/onnxruntime p50 {_ratio_text(rep.ratio())}" if rep.ratios else ""
        ax.set_title(f"{rep.label} on {rep.preset}, {rep.threads} threads: {ratio}")
        ax.set_xlabel("latency per call (ms, log scale)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format=plot_format(path))  # exactly `path`: no suffix added
    plt.close(fig)


def plot_format(path: Path) -> str:
    """The image format `--plot PATH` asks for by its suffix (png without one); checked
    before a benchmark runs, so a typo does not cost the run."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise TvmflowError("--plot needs matplotlib: pip install tvmflow[bench]") from exc
    fmt = Path(path).suffix[1:].lower() or "png"
    known = Figure().canvas.get_supported_filetypes()
    if fmt not in known:
        raise TvmflowError(
            f"--plot {path}: matplotlib cannot write .{fmt} files; use one of "
            f"{', '.join('.' + k for k in sorted(known))}"
        )
    return fmt


def report_json(report: BenchReport) -> dict[str, Any]:
    """One model's report as JSON (strict: non-finite floats become null)."""
    best = report.best_peer
    return _finite(
        {
            "name": report.label,
            "model": report.model,
            "model_sha256": report.model_sha256,
            "artifact": report.artifact,
            "preset": report.preset,
            "tuning": report.tuning,
            "inputs": [s.describe() for s in report.inputs],
            "threads": report.threads,
            "options": {
                "warmup": report.options.warmup,
                "rounds": report.options.rounds,
                "min_time_s": report.options.min_time,
                "seed": report.options.seed,
                "bootstrap": report.options.bootstrap,
                "atol": report.options.tolerance.atol,
                "rtol": report.options.tolerance.rtol,
            },
            "engines": {e.name: _engine_json(e) for e in report.engines},
            "ratios": {
                f"{r.engine}/{r.baseline}": {
                    "p50_ratio": r.p50_ratio,
                    "ci95": [r.ci_low, r.ci_high],
                }
                for r in report.ratios
            },
            "best_peer": best
            and {
                "engine": best.baseline,
                "p50_ratio": best.p50_ratio,
                "ci95": [best.ci_low, best.ci_high],
            },
            "accuracy": {
                a.engine: {
                    "reference": REFERENCE,
                    "passed": a.passed,
                    "outputs": {
                        o.name: dataclasses.asdict(o) | {"passed": o.name not in a.failing}
                        for o in a.outputs
                    },
                }
                for a in report.accuracy
            },
            "passed": report.passed,
            "warnings": list(report.warnings),
        }
    )


def _engine_json(stats: EngineStats) -> dict[str, Any]:
    data = dataclasses.asdict(stats)
    del data["samples_ms"]
    return data


def _finite(value: Any) -> Any:
    """Strict JSON: a non-finite float (e.g. rel. error of an all-zero output) becomes null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
