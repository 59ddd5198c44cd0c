"""Console progress for tuning jobs: a live tqdm bar on a terminal, plain lines otherwise.

Plain lines (CI logs, `nohup`, pipes) come at most every `interval_s` so hour-long jobs do not
flood a log; the final per-task table is `format_table`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

    from tvmflow.tune import TuneProgress, TuningResult
    from tvmflow.tunelog import LogKernel


def duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `42s`; `?` when unknown."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _latency(p: TuneProgress) -> str:
    if p.estimated_us is None:
        return "est. latency unknown"
    text = f"est. {p.estimated_us:.1f} µs"
    if p.untuned_us:
        text += f" (untuned {p.untuned_us:.1f} µs)"
    return text


class ConsoleProgress:
    """A `tune.ProgressSink` that writes to a stream (stderr by default)."""

    def __init__(
        self, stream: TextIO | None = None, tty: bool | None = None, interval_s: float = 30.0
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.bar: tqdm[None] | None = None
        self.last_line = 0.0

    def started(self, progress: TuneProgress) -> None:
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=progress.budget,
                initial=min(progress.trials, progress.budget),
                unit="trial",
                desc="tuning",
                file=self.stream,
                **({"dynamic_ncols": True} if self._width() > 0 else {"ncols": 100, "nrows": 24}),
                bar_format="{desc} {bar} {n_fmt}/{total_fmt} trials [{elapsed}{postfix}]",
            )
            self._postfix(progress)
        else:
            self._line(progress)

    def batch_done(self, progress: TuneProgress) -> None:
        if self.bar is not None:
            self.bar.update(min(progress.trials, progress.budget) - self.bar.n)
            self._postfix(progress)
        elif time.monotonic() - self.last_line >= self.interval_s:
            self._line(progress)

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def finished(self, result: TuningResult) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        more = "" if result.trials >= result.budget else "; rerun the same command to continue"
        print(
            f"tuning stopped ({result.stop_reason}): {result.trials} trials in {result.log_dir} "
            f"(+{result.new_trials} in {duration(result.seconds)}){more}",
            file=self.stream,
            flush=True,
        )

    def _width(self) -> int:
        """The terminal's width; 0 for a pty that reports no size (tqdm then draws nothing)."""
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return 0

    def _postfix(self, p: TuneProgress) -> None:
        assert self.bar is not None
        self.bar.set_postfix_str(f"ETA {duration(p.eta_s)}, {_latency(p)}", refresh=True)

    def _line(self, p: TuneProgress) -> None:
        self.last_line = time.monotonic()
        errors = f", {p.errors} failed" if p.errors else ""
        print(
            f"tuning: {p.trials}/{p.budget} trials (+{p.new_trials} new{errors}), "
            f"{duration(p.elapsed_s)} elapsed, ETA {duration(p.eta_s)}, {_latency(p)}",
            file=self.stream,
            flush=True,
        )


def format_table(result: TuningResult) -> str:
    """Per-task table (task, weight, trials, best µs, speedup over the untuned schedule)."""
    name_w = max([4, *(len(t.name) for t in result.tasks)])
    head = f"{'task':<{name_w}}  {'weight':>6}  {'trials':>6}  {'best µs':>10}  "
    head += f"{'untuned µs':>10}  {'speedup':>7}"
    lines = [head, "-" * len(head)]
    for t in result.tasks:
        speedup = "-" if t.speedup is None else f"{t.speedup:.2f}x"
        lines.append(
            f"{t.name:<{name_w}}  {t.weight:>6}  {t.trials:>6}  {_us(t.best_us):>10}  "
            f"{_us(t.untuned_us):>10}  {speedup:>7}"
        )
    lines.append("-" * len(head))
    est, untuned = result.estimated_us, result.untuned_us
    total = f"estimated end-to-end: {_us(est)} µs"
    if est and untuned:
        total += f" (untuned {untuned:.2f} µs: {untuned / est:.2f}x faster)"
    lines.append(total)
    rate = result.trials_per_second
    lines.append(
        f"{result.trials} trials in {result.log_dir}; this job measured {result.new_trials} in "
        f"{duration(result.seconds)}" + (f" ({rate:.2f} trials/s)" if rate else "")
    )
    return "\n".join(lines)


def format_log(kernels: Sequence[LogKernel]) -> str:
    """`tvmflow logs show`: per kernel trials, default vs best µs; the weighted whole model."""
    name_w = max([6, *(len(k.name) for k in kernels)])
    head = f"{'kernel':<{name_w}}  {'weight':>6}  {'trials':>6}  {'default µs':>10}  "
    head += f"{'best µs':>10}  {'speedup':>7}"
    lines = [head, "-" * len(head)]
    for k in kernels:
        speedup = "-" if k.speedup is None else f"{k.speedup:.2f}x"
        speedup += "*" if k.checked else " "
        weight = "-" if k.weight is None else str(k.weight)
        lines.append(
            f"{k.name:<{name_w}}  {weight:>6}  {k.trials:>6}  {_us(k.default_us):>10}  "
            f"{_us(k.best_us):>10}  {speedup:>7}"
        )
    lines.append("-" * len(head))
    known = [k for k in kernels if k.weight is not None and k.default_us is not None]
    if known and len(known) == len(kernels):
        default = sum(k.weight * k.default_us for k in known if k.weight and k.default_us)
        best = sum(
            k.weight * k.default_us / max(1.0, k.speedup or 1.0)  # compile keeps the faster
            for k in known
            if k.weight and k.default_us
        )
        lines.append(
            f"whole model (kernels x weight): default {default:.2f} µs, with this log "
            f"{best:.2f} µs ({default / best:.2f}x)"
        )
    trials = sum(k.trials for k in kernels)
    lines.append(f"{len(kernels)} kernels, {trials} trials")
    if any(k.checked for k in kernels):
        lines.append("* speedup re-measured beside the default schedule (what compile goes by)")
    return "\n".join(lines)
