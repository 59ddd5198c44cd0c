"""Tune: MetaSchedule search over a model's kernels, and reuse of its records at compile time.

`tune_model` extracts the kernels of exactly the module compile builds (`lowering.tuning_tasks`),
so records match at compile time, and searches them with MetaSchedule (evolutionary search, XGBoost
cost model, gradient task scheduling) within a trial budget and an optional time limit. Each
measured batch is published to the log directory atomically before the next one starts (see
`tunelog`), so a killed job loses at most the batch in flight and a rerun resumes: the trials
already in the log count toward the budget and seed the search and the cost model.

Budgets, the time limit and Ctrl-C end a job at a batch boundary (`scheduler.BatchScheduler`
asks `_Job.stop_reason` before each batch).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tvmflow import __version__, api
from tvmflow.api import callable_module
from tvmflow.errors import TvmflowError
from tvmflow.farm import Farm, check_farm
from tvmflow.lowering import TuningTask, check_precision, default_schedule, tuning_tasks
from tvmflow.targets import Preset, check_build_tools
from tvmflow.tunelog import (
    FAILED_SECS,
    RECORDS,
    SUMMARY_VERSION,
    WORKLOADS,
    LogIdentity,
    candidates_dir,
    check_database,
    check_log_for_job,
    is_baseline,
    locked,
    mean_secs,
    publish,
    register_tensor_intrinsics,
    repair_database,
    stage,
    unstage,
    write_summary,
)

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from tvmflow.frontend import ImportedModel

DEFAULT_TRIALS_PER_TASK = 64
CHECK_ROUNDS = 3  # side-by-side rounds of a kernel's best record vs its default schedule


@dataclass(frozen=True)
class TuneOptions:
    """How long and where to search. Budgets count the trials already in the log."""

    trials: int | None = None  # total for the job's tasks; None: 64 per task
    trials_per_task: int | None = None
    batch_size: int = 64  # candidates measured per batch (MetaSchedule's num_trials_per_iter)
    population: int = 512  # evolutionary search population per batch (search effort)
    time_limit_s: float | None = None
    split: tuple[int, int] = (1, 1)  # (i, N): tune every N-th task starting at the i-th
    farm: Farm | None = None  # measure on an RPC device farm instead of this machine
    seed: int | None = None
    min_repeat_ms: int = 100  # measure each candidate at least this long per repeat
    repeat: int = 1
    build_workers: int | None = None  # default: this machine's logical CPUs
    precision: str = "fp32"  # the kernels of a compile with this --precision
    repair_log: bool = False  # drop the log's damaged lines (kept as *.damaged) and go on


@dataclass(frozen=True)
class TaskResult:
    """One kernel's tuning state: `best_us` from the log, `untuned_us` the default schedule."""

    name: str
    weight: int
    trials: int
    best_us: float | None
    untuned_us: float | None
    workload: str | None = None  # structural hash: what records are keyed by (logs show)
    # the best record and the default schedule re-measured side by side (default µs, best µs)
    checked: tuple[float, float] | None = None
    # why the last job stopped searching it early: "exhausted" (every schedule its space
    # offered was measured) or "negligible" (under MIN_TASK_SHARE of the model); None: it
    # was still searched when the job ended
    search_end: str | None = None

    @property
    def speedup(self) -> float | None:
        """Over the default schedule: the side-by-side check's ratio once there is one."""
        if self.checked is not None:
            return self.checked[0] / self.checked[1]
        if self.best_us is None or self.untuned_us is None:
            return None
        return self.untuned_us / self.best_us

    @property
    def latency_us(self) -> float | None:
        """What this kernel costs in a build with the log: tuned if better, else the default."""
        if self.checked is not None and self.untuned_us is not None:
            return self.untuned_us / max(1.0, self.checked[0] / self.checked[1])
        known = [v for v in (self.best_us, self.untuned_us) if v is not None]
        return min(known) if known else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.weight,
            "trials": self.trials,
            "best_us": _round(self.best_us),
            "untuned_us": _round(self.untuned_us),
            "speedup": _round(self.speedup),
            "workload": self.workload,
            "checked_default_us": _round(self.checked[0]) if self.checked else None,
            "checked_best_us": _round(self.checked[1]) if self.checked else None,
            "search_end": self.search_end,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskResult:
        return cls(
            str(data["name"]),
            int(data["weight"]),
            int(data["trials"]),
            _opt_float(data.get("best_us")),
            _opt_float(data.get("untuned_us")),
            data.get("workload"),
            _checked(data),
            data.get("search_end"),
        )


@dataclass(frozen=True)
class TuneProgress:
    """Where a job stands after a batch."""

    trials: int  # in the log for this job's tasks
    budget: int
    new_trials: int  # measured by this job
    errors: int  # candidates of this job that failed to build or run
    elapsed_s: float
    eta_s: float | None
    estimated_us: float | None  # weighted sum of each task's best-known latency
    untuned_us: float | None
    last_task: str


@dataclass(frozen=True)
class TuningResult:
    """What a tuning job left in its log directory."""

    log_dir: Path
    tasks: tuple[TaskResult, ...]
    trials: int
    budget: int
    new_trials: int
    errors: int
    seconds: float  # this job
    total_seconds: float  # all jobs on this log
    stop_reason: str

    @property
    def estimated_us(self) -> float | None:
        return _weighted(self.tasks, lambda t: t.latency_us)

    @property
    def untuned_us(self) -> float | None:
        return _weighted(self.tasks, lambda t: t.untuned_us)

    @property
    def trials_per_second(self) -> float | None:
        return self.new_trials / self.seconds if self.new_trials and self.seconds > 0 else None


class ProgressSink(Protocol):
    """Receives a job's progress (the CLI draws a bar or prints lines)."""

    def started(self, progress: TuneProgress) -> None: ...

    def batch_done(self, progress: TuneProgress) -> None: ...

    def message(self, text: str) -> None: ...

    def finished(self, result: TuningResult) -> None: ...


STOP_BUDGET = "trial budget reached"
STOP_TIME = "time limit reached"
STOP_INTERRUPT = "interrupted"
STOP_EXHAUSTED = "search space exhausted"
STOP_FARM = "device farm unavailable"


def tune_model(
    model: ImportedModel,
    preset: Preset,
    log_dir: Path,
    options: TuneOptions | None = None,
    progress: ProgressSink | None = None,
) -> TuningResult:
    """Tune a model's kernels for a preset into `log_dir` (created, or resumed)."""
    import tvm

    options = options or TuneOptions()
    _check_options(options)
    check_precision(preset, options.precision)
    check_build_tools(preset)
    if options.farm is not None:
        check_farm(options.farm)
    elif not preset.runs_on_host():  # its CPU here, or for a CUDA preset a GPU that runs it
        raise TvmflowError(
            f"target {preset.name!r} does not run on this machine, so candidates cannot be "
            "measured here; measure on devices with --rpc-tracker HOST:PORT --rpc-key KEY"
        )
    log_dir = Path(log_dir)
    identity = LogIdentity(
        model.sha256, model.inputs, preset.name, dict(preset.target), options.precision
    )
    check_log_for_job(log_dir, identity)  # fail fast; checked again under the lock
    if not options.repair_log:
        check_database(log_dir)
    target = tvm.target.Target(preset.target)
    tasks = _extract_tasks(model, target, options)
    with locked(log_dir) as killed:
        _report_recovery(log_dir, killed, options.repair_log, progress)
        summary = check_log_for_job(log_dir, identity) or {}
        plan = _Plan.of(tasks, options)
        job = _Job(model, preset, target, identity, plan, log_dir, summary, options, progress)
        try:
            return job.run()
        finally:
            unstage(log_dir)


def _report_recovery(
    log_dir: Path, killed: dict[str, Any] | None, repair: bool, progress: ProgressSink | None
) -> None:
    """Say what a killed job left (already cleared by `locked`), and repair the log if asked."""
    if killed is not None and progress:
        progress.message(
            f"the previous job on {log_dir} (pid {killed.get('pid')} on {killed.get('host')}) "
            "was killed; its unfinished batch was dropped, its records are kept"
        )
    if repair:
        dropped, backups = repair_database(log_dir)
        if dropped and progress:
            progress.message(
                f"--repair-log: dropped {dropped} damaged line(s) of {log_dir}; the damaged "
                f"files are kept as {', '.join(b.name for b in backups)}"
            )


def _check_options(options: TuneOptions) -> None:
    i, n = options.split
    if not 1 <= i <= n:
        raise TvmflowError(f"--tasks {i}/{n}: expected i/N with 1 <= i <= N, e.g. --tasks 1/4")
    for name, value in (
        ("--trials", options.trials),
        ("--trials-per-task", options.trials_per_task),
        ("--batch-size", options.batch_size),
        ("--population", options.population),
    ):
        if value is not None and value <= 0:
            raise TvmflowError(f"{name} must be a positive number, not {value}")
    limit = options.time_limit_s
    if limit is not None and not (math.isfinite(limit) and limit > 0):
        raise TvmflowError(f"--time-limit must be positive, not {options.time_limit_s:g}s")


def _extract_tasks(
    model: ImportedModel, target: tvm.target.Target, options: TuneOptions
) -> list[TuningTask]:
    """The kernels compile will build (same lowering), the `split` share of them, by name."""
    tasks = tuning_tasks(model, target, options.precision)
    i, n = options.split
    chosen = tasks[i - 1 :: n]
    if not chosen:
        raise TvmflowError(
            f"--tasks {i}/{n} selects no kernels: the model has {len(tasks)} tunable kernel(s)"
        )
    return chosen


# A kernel whose default schedule costs less than this share of the model's default latency
# is not searched: no record of it can move the model (ResNet-18's reshape costs 0.03 µs of
# ~25 ms, its mean 24 µs), and each of its trials is a build + measurement taken from a
# kernel that can.
MIN_TASK_SHARE = 0.01


@dataclass(frozen=True)
class _Plan:
    """What a job searches: its tasks and its trial budget (the log's trials count toward it)."""

    tasks: tuple[TuningTask, ...]
    budget: int
    per_task: int

    @classmethod
    def of(cls, tasks: Sequence[TuningTask], options: TuneOptions) -> _Plan:
        budget = options.trials or DEFAULT_TRIALS_PER_TASK * len(tasks)
        return cls(tuple(tasks), budget, options.trials_per_task or budget)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def weights(self) -> list[int]:
        return [t.weight for t in self.tasks]


@dataclass(frozen=True)
class _Bench:
    """Where candidates are built and measured (this machine, or a device farm's runner)."""

    builder: ms.builder.Builder
    runner: ms.runner.Runner
    target: tvm.target.Target

    @classmethod
    def open(
        cls, preset: Preset, target: tvm.target.Target, log_dir: Path, options: TuneOptions
    ) -> _Bench:
        return cls(_builder(preset, log_dir, options), _runner(options), target)

    def measure(self, mods: Sequence[tvm.IRModule], rounds: int = 1) -> list[list[list[Any]]]:
        """Build `mods` and run them `rounds` times in turns, so each round's load hits all
        alike: per module, the run_secs of each run that succeeded."""
        import shutil

        from tvm.s_tir import meta_schedule as ms

        built = self.builder.build([ms.builder.BuilderInput(m, self.target) for m in mods])
        device = "cuda" if "gpu" in self.target.keys else "cpu"
        inputs = [
            (k, ms.runner.RunnerInput(b.artifact_path, device, _args_info(mods[k])))
            for k, b in enumerate(built)
            if b.error_msg is None and b.artifact_path
        ]
        runs: list[list[list[Any]]] = [[] for _ in mods]
        try:
            for _ in range(rounds):
                for (k, _), future in zip(
                    inputs, self.runner.run([r for _, r in inputs]), strict=True
                ):
                    result = future.result()
                    if result.error_msg is None and result.run_secs:
                        runs[k].append(list(result.run_secs))
        finally:
            for b in built:
                if b.artifact_path:
                    shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
        return runs

    def close(self) -> None:
        """Stop the runner's worker processes now rather than at garbage collection."""
        pool = getattr(self.runner, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False)


class _Book:
    """The record policy of a job: its working copy of the log's database, and per task the
    trials and best time (the log's records count toward the budget and seed the search)."""

    def __init__(self, work: Path, plan: _Plan) -> None:
        from tvm.s_tir import meta_schedule as ms

        self.db = ms.database.JSONDatabase(
            path_workload=str(work / WORKLOADS), path_tuning_record=str(work / RECORDS)
        )
        self.workloads = [self.db.commit_workload(t.workload) for t in plan.tasks]
        self.trials = [0] * len(plan.tasks)
        index = {w: i for i, w in enumerate(self.workloads)}
        for record in self.db.get_all_tuning_records():
            i = index.get(record.workload)
            if i is not None:
                self.trials[i] += 1
        self.best_s: list[float | None] = [None] * len(plan.tasks)
        for i in range(len(plan.tasks)):
            if (top := self.best_record(i)) is not None:
                self.best_s[i] = mean_secs(top.run_secs)
        self.new_trials = 0
        self.errors = 0

    def best_record(self, task: int) -> ms.database.TuningRecord | None:
        top = self.db.get_top_k(self.workloads[task], 1)
        return top[0] if top else None

    def commit(
        self, task: int, trace: Any, run_secs: list[Any], target: Any, args: list[Any]
    ) -> None:
        """Record a schedule this job measured itself (the default schedules, trial 0)."""
        from tvm.s_tir import meta_schedule as ms

        self.db.commit_tuning_record(
            ms.database.TuningRecord(trace, self.workloads[task], run_secs, target, args)
        )
        self._count(task, 1)
        self._improve(task, mean_secs(run_secs))

    def account(
        self,
        task: int,
        builds: Sequence[ms.builder.BuilderResult],
        runs: Sequence[ms.runner.RunnerResult],
    ) -> None:
        """Count a batch MetaSchedule's AddToDatabase just recorded."""
        self._count(task, len(runs))
        for build, run in zip(builds, runs, strict=True):
            if build.error_msg is not None or run.error_msg is not None or not run.run_secs:
                self.errors += 1
            else:
                self._improve(task, mean_secs(run.run_secs))

    def _count(self, task: int, n: int) -> None:
        self.trials[task] += n  # trials count the log's records
        self.new_trials += n

    def _improve(self, task: int, secs: float) -> None:
        best = self.best_s[task]
        if best is None or secs < best:
            self.best_s[task] = secs


def _negligible(weights: Sequence[int], untuned_us: Sequence[float | None]) -> frozenset[int]:
    """Tasks below MIN_TASK_SHARE of the model's default latency (none while one is unknown)."""
    if any(u is None for u in untuned_us):
        return frozenset()
    costs = [w * float(u or 0.0) for w, u in zip(weights, untuned_us, strict=True)]
    total = sum(costs)
    return frozenset(i for i, c in enumerate(costs) if c < MIN_TASK_SHARE * total)


class _Job:
    """One tuning run on one log directory (holds the lock while it exists): the task loop.

    Measuring is `_Bench`'s, the records and trial counts `_Book`'s, the report the
    `_task_results`/`_summary_json` functions'; the job orders them and answers the
    scheduler's questions at batch boundaries (`scheduler.BatchHooks`)."""

    def __init__(
        self,
        model: ImportedModel,
        preset: Preset,
        target: tvm.target.Target,
        identity: LogIdentity,
        plan: _Plan,
        log_dir: Path,
        summary: dict[str, Any],
        options: TuneOptions,
        progress: ProgressSink | None,
    ) -> None:
        self.model, self.preset, self.target = model, preset, target
        self.identity, self.plan, self.log_dir = identity, plan, log_dir
        self.summary, self.options, self.progress = summary, options, progress
        self.start = time.monotonic()
        self.interrupts = 0
        self.stopped: str | None = None
        self.farm_error: str | None = None
        self.last_task = ""
        self.skipped: frozenset[int] = frozenset()
        self.exhausted: set[int] = set()

    # -- the job ---------------------------------------------------------------------------
    def run(self) -> TuningResult:
        self.book = _Book(stage(self.log_dir), self.plan)
        known = {t["name"]: t for t in self.summary.get("tasks", [])}
        self.untuned = [_opt_float(known.get(n, {}).get("untuned_us")) for n in self.plan.names]
        self.checked = {
            i: c for i, n in enumerate(self.plan.names) if (c := _checked(known.get(n, {})))
        }
        if self.stop_reason_now() is None:
            with _sigint_deferred(self._on_sigint):
                self._search()
        publish(self.log_dir)
        result = self._result(self.stopped or self.stop_reason_now() or STOP_EXHAUSTED)
        write_summary(self.log_dir, self._summary(result))
        if self.progress:
            self.progress.finished(result)
        if self.interrupts:
            raise KeyboardInterrupt
        if self.farm_error:
            raise TvmflowError(
                f"{self.farm_error} (the {result.trials} trials measured so far are saved in "
                f"{self.log_dir}; rerun to continue)"
            )
        return result

    def _search(self) -> None:
        bench = _Bench.open(self.preset, self.target, self.log_dir, self.options)
        try:
            self._measure_defaults(bench)
            self.write_summary()
            if self.progress:
                self.progress.started(self.status())
            if self.stop_reason_now() is not None:  # e.g. the untuned trials met the budget
                return
            self._skip_negligible()
            self._tune(bench)
            if not self.interrupts and self.farm_error is None:
                self._check_best(bench)
        finally:
            bench.close()

    def _tune(self, bench: _Bench) -> None:
        """MetaSchedule's task loop, one batch at a time (`scheduler.BatchScheduler`)."""
        from tvm.s_tir import meta_schedule as ms

        from tvmflow import scheduler

        if self.progress:
            self.progress.message("preparing the search (the first time takes a while)")
        register_tensor_intrinsics(self.target)
        with contextlib.ExitStack() as stack:
            contexts = _contexts(self.plan, self.target, self.log_dir, self.options, stack)
            self.cost_model = ms.cost_model.XGBModel(
                num_tuning_cores=self._cores(), tree_method="auto"
            )
            sched = scheduler.BatchScheduler(self, self.plan.weights, self.options.seed)
            remaining = self.plan.budget - sum(self.book.trials)
            try:
                sched.tune(
                    tasks=contexts,
                    task_weights=[float(w) for w in self.plan.weights],
                    max_trials_global=remaining,
                    max_trials_per_task=min(self.plan.per_task, remaining),
                    num_trials_per_iter=self.options.batch_size,
                    builder=bench.builder,
                    runner=bench.runner,
                    measure_callbacks=scheduler.measure_callbacks(self),
                    database=self.book.db,
                    cost_model=self.cost_model,
                )
            except Exception:
                if self.interrupts > 1:  # the second Ctrl-C, surfacing through TVM's FFI
                    raise KeyboardInterrupt from None
                raise
            self.stopped = sched.stopped_because

    def _ended(self) -> dict[int, str]:
        """Tasks whose search ended before the job's: exhausted, or left out as negligible."""
        ended = dict.fromkeys(self.exhausted, "exhausted")
        return ended | dict.fromkeys(self.skipped, "negligible")

    def _cores(self) -> int:
        return int(self.preset.target.get("num-cores") or os.cpu_count() or 1)

    def _skip_negligible(self) -> None:
        """Leave out of the search the kernels no record could move the model by."""
        self.skipped = _negligible(self.plan.weights, self.untuned)
        if self.skipped and self.progress:
            names = ", ".join(self.plan.names[i] for i in sorted(self.skipped))
            self.progress.message(
                f"not searching {len(self.skipped)} kernel(s) under {MIN_TASK_SHARE:.0%} of the "
                f"model's default time: {names}"
            )

    # -- default schedules -----------------------------------------------------------------
    def _measure_defaults(self, bench: _Bench) -> None:
        """Measure each kernel not yet measured as compile builds it without records, and
        record that as trial 0 (also as the default point of its rule's design space).

        With tvmflow's default schedule in the database, compile never picks a tuned schedule
        slower than what it would build untuned, and the search starts from it (evolutionary
        search seeds its population from the database's best, not the space's decisions).
        """
        missing = [i for i, u in enumerate(self.untuned) if u is None]
        if not missing:
            return
        if self.progress:
            self.progress.message(f"measuring the untuned schedule of {len(missing)} kernel(s)")
        tasks = [self.plan.tasks[i] for i in missing]
        schedules = [default_schedule(t.kernel, self.target) for t in tasks]
        spaces = [_rule_space(t, self.target) for t in tasks]
        runs = bench.measure([s.mod for s in schedules])
        for i, schedule, space, run in zip(missing, schedules, spaces, runs, strict=True):
            if not run:
                continue
            run_secs, args = run[0], _args_info(schedule.mod)
            self.untuned[i] = mean_secs(run_secs) * 1e6
            self.book.commit(i, schedule.trace, run_secs, self.target, args)
            if space is not None:  # the same schedule as a point of its rule's design space
                self.book.commit(i, space[0].trace, run_secs, self.target, args)
        publish(self.log_dir)

    def _check_best(self, bench: _Bench) -> None:
        """Re-measure each improved kernel's best record and its default schedule side by side
        (alternating, CHECK_ROUNDS times), so both see the same machine load: measured minutes
        apart on a shared machine the two drift by tens of percent. Compile applies a record
        only where this check found it faster (`tunelog.improving_records`)."""
        import statistics

        from tvm import s_tir

        todo = []
        for i, task in enumerate(self.plan.tasks):
            top, untuned = self.book.best_record(i), self.untuned[i]
            if top is None or is_baseline(top) or untuned is None:
                continue
            if mean_secs(top.run_secs) * 1e6 >= untuned:
                continue  # not faster even measured alone
            tuned = s_tir.Schedule(task.workload)
            top.trace.apply_to_schedule(tuned, remove_postproc=False)
            todo.append((i, default_schedule(task.kernel, self.target), tuned))
        if not todo:
            return
        if self.progress:
            self.progress.message(
                f"checking the best schedule of {len(todo)} kernel(s) against the default"
            )
        mods = [s.mod for _, default, tuned in todo for s in (default, tuned)]
        runs = bench.measure(mods, CHECK_ROUNDS)
        for j, (i, _, _) in enumerate(todo):
            default_us = [mean_secs(r) * 1e6 for r in runs[2 * j]]
            best_us = [mean_secs(r) * 1e6 for r in runs[2 * j + 1]]
            if default_us and best_us:
                self.checked[i] = (statistics.median(default_us), statistics.median(best_us))

    # -- scheduler hooks (scheduler.BatchHooks) ---------------------------------------------
    def first_boundary(self, scheduler: ms.task_scheduler.TaskScheduler) -> None:
        """Warm start: teach the cost model the log's measurements before the first batch."""
        from tvm.s_tir import meta_schedule as ms

        for i, workload in enumerate(self.book.workloads):
            records = self.book.db.get_top_k(workload, 256)
            if not records:
                continue
            self.cost_model.update(
                scheduler.tasks_[i].ctx,
                [r.as_measure_candidate() for r in records],
                [ms.runner.RunnerResult(r.run_secs, None) for r in records],
            )

    def task_capped(self, task_id: int) -> bool:
        if task_id in self.skipped or task_id in self.exhausted:
            return True
        return self.book.trials[task_id] >= self.plan.per_task

    def best_seconds(self, task_id: int) -> float | None:
        return self.book.best_s[task_id]

    def stop_reason(self) -> str | None:
        reason = self.stop_reason_now()
        if reason is None and self.options.farm is not None:
            try:
                check_farm(self.options.farm)
            except TvmflowError as exc:
                self.farm_error = str(exc)
                return STOP_FARM
        return reason

    def batch_done(
        self,
        task_id: int,
        builds: Sequence[ms.builder.BuilderResult],
        runs: Sequence[ms.runner.RunnerResult],
    ) -> None:
        """Publish the batch the database just recorded, then account for it.

        A batch without candidates means the search sampled and evolved a whole population
        and every schedule in it was measured already: the space is exhausted (a rule's
        design space has a few dozen points). MetaSchedule would keep asking it for batches
        (~20 s of search each, ResNet-18 lost 24 of 30 minutes so), so the task ends here."""
        if not runs:
            self.exhausted.add(task_id)
            return
        publish(self.log_dir)
        self.last_task = self.plan.names[task_id]
        self.book.account(task_id, builds, runs)
        self.write_summary()
        if self.progress:
            self.progress.batch_done(self.status())

    def stop_reason_now(self) -> str | None:
        """Why no further batch should start, if so."""
        trials = self.book.trials
        if self.interrupts:
            return STOP_INTERRUPT
        if sum(trials) >= self.plan.budget or all(t >= self.plan.per_task for t in trials):
            return STOP_BUDGET
        limit = self.options.time_limit_s
        if limit is not None and time.monotonic() - self.start >= limit:
            return STOP_TIME
        return None

    def _on_sigint(self) -> None:
        self.interrupts += 1
        if self.interrupts > 1:
            raise KeyboardInterrupt
        if self.progress:
            self.progress.message(
                "Ctrl-C: stopping after the batch being measured (press again to abort it)"
            )

    # -- reporting -------------------------------------------------------------------------
    def status(self) -> TuneProgress:
        tasks = _task_results(self.plan, self.book, self.untuned, self.checked, self._ended())
        elapsed = time.monotonic() - self.start
        new = self.book.new_trials
        left = max(0, self.plan.budget - sum(self.book.trials))
        eta = left * elapsed / new if new else None
        if eta is not None and self.options.time_limit_s is not None:
            eta = min(eta, max(0.0, self.options.time_limit_s - elapsed))
        return TuneProgress(
            trials=sum(self.book.trials),
            budget=self.plan.budget,
            new_trials=new,
            errors=self.book.errors,
            elapsed_s=elapsed,
            eta_s=eta,
            estimated_us=_weighted(tasks, lambda t: t.latency_us),
            untuned_us=_weighted(tasks, lambda t: t.untuned_us),
            last_task=self.last_task,
        )

    def _result(self, reason: str) -> TuningResult:
        elapsed = time.monotonic() - self.start
        return TuningResult(
            log_dir=self.log_dir,
            tasks=_task_results(self.plan, self.book, self.untuned, self.checked, self._ended()),
            trials=sum(self.book.trials),
            budget=self.plan.budget,
            new_trials=self.book.new_trials,
            errors=self.book.errors,
            seconds=elapsed,
            total_seconds=float(self.summary.get("seconds", 0.0)) + elapsed,
            stop_reason=reason,
        )

    def write_summary(self) -> None:
        write_summary(self.log_dir, self._summary(self._result("running")))

    def _summary(self, result: TuningResult) -> dict[str, Any]:
        return _summary_json(
            result,
            self.summary,
            self.identity,
            self.model,
            self.preset,
            self.options,
            len(self.book.db),
        )


def _task_results(
    plan: _Plan,
    book: _Book,
    untuned: Sequence[float | None],
    checked: dict[int, Any],
    ended: dict[int, str],
) -> tuple[TaskResult, ...]:
    """Each task's state for reports: trials and best from the log, default and check."""
    return tuple(
        TaskResult(
            task.name,
            task.weight,
            book.trials[i],
            None if best is None or best >= FAILED_SECS else best * 1e6,
            untuned[i],
            str(book.workloads[i].as_json()[0]),
            checked.get(i),
            ended.get(i),
        )
        for i, (task, best) in enumerate(zip(plan.tasks, book.best_s, strict=True))
    )


def _summary_json(
    result: TuningResult,
    previous: dict[str, Any],
    identity: LogIdentity,
    model: ImportedModel,
    preset: Preset,
    options: TuneOptions,
    records: int,
) -> dict[str, Any]:
    """summary.json: this job's tasks, plus the log's other tasks (other --tasks shares)."""
    import tvm

    mine = {t.name for t in result.tasks}
    others = [TaskResult.from_json(t) for t in previous.get("tasks", []) if t["name"] not in mine]
    tasks = sorted((*result.tasks, *others), key=lambda t: t.name)
    i, n = options.split
    return {
        "summary_version": SUMMARY_VERSION,
        "identity": identity.to_json(),
        "model": {"file": model.path.name, "sha256": model.sha256},
        "preset": preset.name,
        "target": dict(preset.target),
        "tvmflow_version": __version__,
        "tvm_version": tvm.__version__,
        "trials": records,
        "seconds": round(result.total_seconds, 3),
        "estimated_latency_us": _round(_weighted(tasks, lambda t: t.latency_us)),
        "untuned_latency_us": _round(_weighted(tasks, lambda t: t.untuned_us)),
        "last_job": {
            "tasks": f"{i}/{n}",
            "budget": result.budget,
            "new_trials": result.new_trials,
            "errors": result.errors,
            "seconds": round(result.seconds, 3),
            "stopped": result.stop_reason,
            "measured_on": str(options.farm.tracker) if options.farm else "local",
        },
        "tasks": [t.to_json() for t in tasks],
    }


# -- MetaSchedule objects ------------------------------------------------------------------
def _builder(preset: Preset, log_dir: Path, options: TuneOptions) -> ms.builder.Builder:
    import functools

    from tvm.s_tir import meta_schedule as ms

    return ms.builder.LocalBuilder(
        max_workers=options.build_workers or os.cpu_count() or 1,
        f_build=build_candidate,
        f_export=functools.partial(export_candidate, preset, directory=candidates_dir(log_dir)),
        initializer=functools.partial(die_with_job, os.getpid()),
    )


def _runner(options: TuneOptions) -> ms.runner.Runner:
    import functools

    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(
        number=3,
        repeat=options.repeat,
        min_repeat_ms=options.min_repeat_ms,
        enable_cpu_cache_flush=False,
    )
    initializer = functools.partial(die_with_job, os.getpid())
    if options.farm is not None:
        from tvmflow.farm import make_runner

        return make_runner(options.farm, evaluator, initializer)
    return ms.runner.LocalRunner(evaluator_config=evaluator, initializer=initializer)


def _contexts(
    plan: _Plan,
    target: tvm.target.Target,
    log_dir: Path,
    options: TuneOptions,
    stack: contextlib.ExitStack,
) -> list[ms.TuneContext]:
    """One TuneContext per task, each logging to `logs/` in the log directory.

    MetaSchedule's own helper configures logging process-wide (dictConfig, a console
    handler on stdout); tvmflow keeps its output to the progress sink and the files.
    """
    from tvm.s_tir import meta_schedule as ms

    strategy = ms.search_strategy.EvolutionarySearch(
        population_size=options.population,
        init_min_unmeasured=min(50, max(1, options.population // 2)),
    )
    seeds = ms.utils.fork_seed(options.seed, n=len(plan.tasks))
    contexts = []
    for i, (task, seed) in enumerate(zip(plan.tasks, seeds, strict=True)):
        logger = stack.enter_context(_task_logger(log_dir / "logs", i, task.name))
        ctx = ms.TuneContext(
            mod=task.workload,
            target=target,
            space_generator=_space_generator(task, target),
            search_strategy=strategy,
            task_name=task.name,
            logger=logger,
            rand_state=seed,
            num_threads="physical",
        )
        contexts.append(ctx.clone())
    return contexts


def _rule_space(task: TuningTask, target: tvm.target.Target) -> list[tvm.s_tir.Schedule] | None:
    """The design spaces of the tvmflow rule that schedules this kernel by default, if any."""
    from tvmflow.schedules import design_spaces

    return design_spaces(task.kernel["main"], target) or None


def _space_generator(task: TuningTask, target: tvm.target.Target) -> Any:
    """Search around tvmflow's own rule where one claims the kernel: its design spaces, varied
    by MetaSchedule's tile-size mutator (the space's default point is in the log as trial 0, so
    evolutionary search starts from it); MetaSchedule's generic space for the other kernels.

    Candidates keep the rule's structure, so they need none of the generic space's postprocs.
    """
    from tvm.s_tir import meta_schedule as ms

    spaces = _rule_space(task, target)
    if spaces is None:
        return "post-order-apply"
    return ms.space_generator.ScheduleFn(
        lambda _sch: spaces,
        sch_rules=[],
        postprocs=[],
        mutator_probs={ms.mutator.MutateTileSize(): 1.0},
    )


def _args_info(mod: tvm.IRModule) -> list[Any]:
    from tvm.s_tir import meta_schedule as ms

    # as the kernel is measured: a prepacked weight in its packed layout (the repacking block
    # is removed by `build_candidate`, compile folds it into the constant)
    return list(ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True))


def _weighted(
    tasks: Sequence[TaskResult], value: Callable[[TaskResult], float | None]
) -> float | None:
    total = 0.0
    for task in tasks:
        v = value(task)
        if v is None:
            return None
        total += task.weight * v
    return total


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 3)


def _checked(data: dict[str, Any]) -> tuple[float, float] | None:
    default, best = data.get("checked_default_us"), data.get("checked_best_us")
    return None if default is None or best is None else (float(default), float(best))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def build_candidate(
    mod: tvm.IRModule, target: tvm.target.Target, _params: dict[str, Any] | None
) -> tvm.runtime.Module:
    """MetaSchedule's default build without its `import tvm.s_tir.tensor_intrin`.

    That import registers every intrinsic of every backend and takes 15-40 s; MetaSchedule's
    builder starts fresh worker processes for every batch, so it would dominate tuning time.
    Candidates arrive already tensorized, so building them needs no registered intrinsics.
    """
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from tvmflow.export import codegen_scope

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    with codegen_scope(target):
        return tvm.build(mod, target=target)


def export_candidate(preset: Preset, mod: tvm.runtime.Module, directory: Path | None = None) -> str:
    """Export one candidate as a shared library, built as compile builds the preset's
    artifacts (its cross compiler; nvcc-built device code for CUDA), in a fresh folder under
    `directory` (a job's `candidates_dir`, so a killed job's leftovers go with its `.work/`).

    MetaSchedule's default exports a tar of object files that the measuring machine links
    itself; a shared library built here needs no compiler on the (remote, maybe ARM) device.
    """
    import tvm

    from tvmflow.export import export_library

    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="tvmflow-candidate-", dir=directory)) / "candidate.so"
    export_library(mod, preset, tvm.target.Target(preset.target), path)
    return str(path)


def die_with_job(job_pid: int) -> None:
    """Initializer of MetaSchedule's worker processes: the kernel SIGKILLs a worker when the
    job thread that started it dies (PR_SET_PDEATHSIG), so a `kill -9` of a job leaves no
    orphan (a ~280 MB process that would keep measuring for minutes)."""
    if not sys.platform.startswith("linux"):  # pragma: no cover - Linux only
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != job_pid:  # the job died before the line above took effect
        os._exit(1)


@contextmanager
def _task_logger(directory: Path, index: int, name: str) -> Iterator[logging.Logger]:
    """A logger writing one task's MetaSchedule log to `directory` (closed afterwards)."""
    directory.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"tvmflow.tune.task.{index}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(directory / f"task_{index:03d}_{name[:100]}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()


@contextmanager
def _sigint_deferred(on_sigint: Callable[[], None]) -> Iterator[None]:
    """Route Ctrl-C to `on_sigint` and keep it away from MetaSchedule's worker processes.

    The terminal sends Ctrl-C to the whole process group; the builder and runner workers would
    die with the batch in flight. Blocking SIGINT in this thread while they are spawned makes
    them inherit the block; a helper thread (started before) keeps it deliverable to us.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    released = threading.Event()
    receiver = threading.Thread(target=released.wait, name="tvmflow-sigint", daemon=True)
    receiver.start()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: on_sigint())
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, previous)
        released.set()


callable_module(__name__, api.tune)  # tvmflow.tune(model, target, log=...)
