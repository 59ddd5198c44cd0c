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
        job = _Job(model, preset, target, identity, tasks, log_dir, summary, options, progress)
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


class _Job:
    """One tuning run on one log directory (holds the lock while it exists)."""

    def __init__(
        self,
        model: ImportedModel,
        preset: Preset,
        target: tvm.target.Target,
        identity: LogIdentity,
        tasks: list[TuningTask],
        log_dir: Path,
        summary: dict[str, Any],
        options: TuneOptions,
        progress: ProgressSink | None,
    ) -> None:
        self.model, self.preset, self.target = model, preset, target
        self.identity, self.tasks, self.log_dir = identity, tasks, log_dir
        self.summary, self.options, self.progress = summary, options, progress
        self.names = [t.name for t in tasks]
        self.weights = [t.weight for t in tasks]
        self.budget = options.trials or DEFAULT_TRIALS_PER_TASK * len(tasks)
        self.per_task = options.trials_per_task or self.budget
        self.start = time.monotonic()
        self.new_trials = 0
        self.errors = 0
        self.interrupts = 0
        self.stopped: str | None = None
        self.farm_error: str | None = None
        self.last_task = ""

    # -- the job ---------------------------------------------------------------------------
    def run(self) -> TuningResult:
        from tvm.s_tir import meta_schedule as ms

        work = stage(self.log_dir)
        self.db = ms.database.JSONDatabase(
            path_workload=str(work / WORKLOADS), path_tuning_record=str(work / RECORDS)
        )
        self.workloads = [self.db.commit_workload(t.workload) for t in self.tasks]
        self.trials, self.best_s = self._prior_records()
        self.untuned = self._known_untuned()
        self.checked = self._known_checks()
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
        from tvm.s_tir import meta_schedule as ms

        from tvmflow import scheduler

        builder = self._builder()
        runner = self._runner()
        with contextlib.ExitStack() as stack:
            stack.callback(_shutdown, runner)
            missing = [i for i, u in enumerate(self.untuned) if u is None]
            if missing:
                if self.progress:
                    self.progress.message(
                        f"measuring the untuned schedule of {len(missing)} kernel(s)"
                    )
                measured = self._measure_untuned(missing, builder, runner)
                for i, us in zip(missing, measured, strict=True):
                    self.untuned[i] = us
            self.write_summary()
            if self.progress:
                self.progress.started(self.status())
            if self.stop_reason_now() is not None:  # e.g. the untuned trials met the budget
                return
            if self.progress:
                self.progress.message("preparing the search (the first time takes a while)")
            register_tensor_intrinsics(self.target)
            contexts = self._contexts(stack)
            self.cost_model = ms.cost_model.XGBModel(
                num_tuning_cores=self._cores(), tree_method="auto"
            )
            sched = scheduler.BatchScheduler(self, self.weights, self.options.seed)
            remaining = self.budget - sum(self.trials)
            try:
                sched.tune(
                    tasks=contexts,
                    task_weights=[float(w) for w in self.weights],
                    max_trials_global=remaining,
                    max_trials_per_task=min(self.per_task, remaining),
                    num_trials_per_iter=self.options.batch_size,
                    builder=builder,
                    runner=runner,
                    measure_callbacks=scheduler.measure_callbacks(self),
                    database=self.db,
                    cost_model=self.cost_model,
                )
            except Exception:
                if self.interrupts > 1:  # the second Ctrl-C, surfacing through TVM's FFI
                    raise KeyboardInterrupt from None
                raise
            self.stopped = sched.stopped_because
            if not self.interrupts and self.farm_error is None:
                self._check_best(builder, runner)

    # -- MetaSchedule objects --------------------------------------------------------------
    def _cores(self) -> int:
        return int(self.preset.target.get("num-cores") or os.cpu_count() or 1)

    def _builder(self) -> ms.builder.Builder:
        import functools

        from tvm.s_tir import meta_schedule as ms

        return ms.builder.LocalBuilder(
            max_workers=self.options.build_workers or os.cpu_count() or 1,
            f_build=build_candidate,
            f_export=functools.partial(
                export_candidate, self.preset, directory=candidates_dir(self.log_dir)
            ),
            initializer=functools.partial(die_with_job, os.getpid()),
        )

    def _runner(self) -> ms.runner.Runner:
        import functools

        from tvm.s_tir import meta_schedule as ms

        evaluator = ms.runner.EvaluatorConfig(
            number=3,
            repeat=self.options.repeat,
            min_repeat_ms=self.options.min_repeat_ms,
            enable_cpu_cache_flush=False,
        )
        initializer = functools.partial(die_with_job, os.getpid())
        if self.options.farm is not None:
            from tvmflow.farm import make_runner

            return make_runner(self.options.farm, evaluator, initializer)
        return ms.runner.LocalRunner(evaluator_config=evaluator, initializer=initializer)

    def _contexts(self, stack: contextlib.ExitStack) -> list[ms.TuneContext]:
        """One TuneContext per task, each logging to `logs/` in the log directory.

        MetaSchedule's own helper configures logging process-wide (dictConfig, a console
        handler on stdout); tvmflow keeps its output to the progress sink and the files.
        """
        from tvm.s_tir import meta_schedule as ms

        population = self.options.population
        strategy = ms.search_strategy.EvolutionarySearch(
            population_size=population, init_min_unmeasured=min(50, max(1, population // 2))
        )
        seeds = ms.utils.fork_seed(self.options.seed, n=len(self.tasks))
        contexts = []
        for i, (task, seed) in enumerate(zip(self.tasks, seeds, strict=True)):
            logger = stack.enter_context(_task_logger(self.log_dir / "logs", i, self.names[i]))
            ctx = ms.TuneContext(
                mod=task.workload,
                target=self.target,
                space_generator=_space_generator(task, self.target),
                search_strategy=strategy,
                task_name=self.names[i],
                logger=logger,
                rand_state=seed,
                num_threads="physical",
            )
            contexts.append(ctx.clone())
        return contexts

    # -- records ---------------------------------------------------------------------------
    def _prior_records(self) -> tuple[list[int], list[float | None]]:
        """Trials and best mean run time per task from the records already in the log."""
        index = {w: i for i, w in enumerate(self.workloads)}
        trials = [0] * len(self.tasks)
        for record in self.db.get_all_tuning_records():
            i = index.get(record.workload)
            if i is not None:
                trials[i] += 1
        best: list[float | None] = []
        for workload in self.workloads:
            top = self.db.get_top_k(workload, 1)
            best.append(mean_secs(top[0].run_secs) if top else None)
        return trials, best

    def _known_untuned(self) -> list[float | None]:
        known = {t["name"]: t.get("untuned_us") for t in self.summary.get("tasks", [])}
        return [_opt_float(known.get(name)) for name in self.names]

    def _known_checks(self) -> dict[int, tuple[float, float]]:
        known = {t["name"]: _checked(t) for t in self.summary.get("tasks", [])}
        return {i: c for i, name in enumerate(self.names) if (c := known.get(name)) is not None}

    def _check_best(self, builder: ms.builder.Builder, runner: ms.runner.Runner) -> None:
        """Re-measure each improved kernel's best record and its default schedule side by side
        (alternating, CHECK_ROUNDS times), so both see the same machine load: measured minutes
        apart on a shared machine the two drift by tens of percent. Compile applies a record
        only where this check found it faster (`tunelog.improving_records`)."""
        import shutil
        import statistics

        from tvm import s_tir
        from tvm.s_tir import meta_schedule as ms

        todo = []
        for i, workload in enumerate(self.workloads):
            top = self.db.get_top_k(workload, 1)
            untuned = self.untuned[i]
            if not top or is_baseline(top[0]) or untuned is None:
                continue
            if mean_secs(top[0].run_secs) * 1e6 >= untuned:
                continue  # not faster even measured alone
            tuned = s_tir.Schedule(self.tasks[i].workload)
            top[0].trace.apply_to_schedule(tuned, remove_postproc=False)
            todo.append((i, default_schedule(self.tasks[i].kernel, self.target), tuned))
        if not todo:
            return
        if self.progress:
            self.progress.message(
                f"checking the best schedule of {len(todo)} kernel(s) against the default"
            )
        mods = [s.mod for _, default, tuned in todo for s in (default, tuned)]
        built = builder.build([ms.builder.BuilderInput(m, self.target) for m in mods])
        device = "cuda" if "gpu" in self.target.keys else "cpu"
        inputs = [
            (k, ms.runner.RunnerInput(b.artifact_path, device, _args_info(mods[k])))
            for k, b in enumerate(built)
            if b.error_msg is None and b.artifact_path
        ]
        times: list[list[float]] = [[] for _ in mods]
        for _ in range(CHECK_ROUNDS):
            for (k, _), future in zip(inputs, runner.run([r for _, r in inputs]), strict=True):
                result = future.result()
                if result.error_msg is None and result.run_secs:
                    times[k].append(mean_secs(result.run_secs) * 1e6)
        for j, (i, _, _) in enumerate(todo):
            default_us, best_us = times[2 * j], times[2 * j + 1]
            if default_us and best_us:
                self.checked[i] = (statistics.median(default_us), statistics.median(best_us))
        for b in built:
            if b.artifact_path:
                shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)

    def _measure_untuned(
        self, indices: Sequence[int], builder: ms.builder.Builder, runner: ms.runner.Runner
    ) -> list[float | None]:
        """Measure each kernel as compile builds it without records, and record that as trial 0.

        With tvmflow's default schedule in the database, compile never picks a tuned schedule
        slower than what it would build untuned, and the search starts from it.
        """
        import shutil

        from tvm.s_tir import meta_schedule as ms

        schedules = [default_schedule(self.tasks[i].kernel, self.target) for i in indices]
        spaces = [_rule_space(self.tasks[i], self.target) for i in indices]
        built = builder.build([ms.builder.BuilderInput(s.mod, self.target) for s in schedules])
        device = "cuda" if "gpu" in self.target.keys else "cpu"
        args = [_args_info(s.mod) for s in schedules]
        runs = [
            (k, ms.runner.RunnerInput(b.artifact_path, device, args[k]))
            for k, b in enumerate(built)
            if b.error_msg is None and b.artifact_path
        ]
        futures = runner.run([r for _, r in runs])
        out: list[float | None] = [None] * len(schedules)
        for (k, _), future in zip(runs, futures, strict=True):
            result = future.result()
            if result.error_msg is not None or not result.run_secs:
                continue
            secs = mean_secs(result.run_secs)
            out[k] = secs * 1e6
            task = indices[k]
            self.db.commit_tuning_record(
                ms.database.TuningRecord(
                    schedules[k].trace,
                    self.workloads[task],
                    result.run_secs,
                    self.target,
                    args[k],
                )
            )
            space = spaces[k]
            if space is not None:  # the same schedule as a point of its rule's design space
                self.db.commit_tuning_record(
                    ms.database.TuningRecord(
                        space[0].trace, self.workloads[task], result.run_secs, self.target, args[k]
                    )
                )
                self.trials[task] += 1  # trials count the log's records
                self.new_trials += 1
            self.trials[task] += 1
            self.new_trials += 1
            best = self.best_s[task]
            if best is None or secs < best:
                self.best_s[task] = secs
        for b in built:
            if b.artifact_path:
                shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)
        publish(self.log_dir)
        return out

    # -- scheduler hooks (scheduler.BatchHooks) ---------------------------------------------
    def first_boundary(self, scheduler: ms.task_scheduler.TaskScheduler) -> None:
        """Warm start: teach the cost model the log's measurements before the first batch."""
        from tvm.s_tir import meta_schedule as ms

        for i, workload in enumerate(self.workloads):
            records = self.db.get_top_k(workload, 256)
            if not records:
                continue
            self.cost_model.update(
                scheduler.tasks_[i].ctx,
                [r.as_measure_candidate() for r in records],
                [ms.runner.RunnerResult(r.run_secs, None) for r in records],
            )

    def task_capped(self, task_id: int) -> bool:
        return self.trials[task_id] >= self.per_task

    def best_seconds(self, task_id: int) -> float | None:
        return self.best_s[task_id]

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
        """Publish the batch the database just recorded, then account for it."""
        if not runs:  # the search found no new candidate this time
            return
        publish(self.log_dir)
        self.last_task = self.names[task_id]
        self.trials[task_id] += len(runs)
        self.new_trials += len(runs)
        for build, run in zip(builds, runs, strict=True):
            if build.error_msg is not None or run.error_msg is not None or not run.run_secs:
                self.errors += 1
                continue
            secs = mean_secs(run.run_secs)
            best = self.best_s[task_id]
            if best is None or secs < best:
                self.best_s[task_id] = secs
        self.write_summary()
        if self.progress:
            self.progress.batch_done(self.status())

    def stop_reason_now(self) -> str | None:
        """Why no further batch should start, if so."""
        if self.interrupts:
            return STOP_INTERRUPT
        if sum(self.trials) >= self.budget:
            return STOP_BUDGET
        if all(t >= self.per_task for t in self.trials):
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
    def task_results(self) -> tuple[TaskResult, ...]:
        return tuple(
            TaskResult(
                name,
                weight,
                trials,
                None if best is None or best >= FAILED_SECS else best * 1e6,
                untuned,
                str(workload.as_json()[0]),
                self.checked.get(i),
            )
            for i, (name, weight, trials, best, untuned, workload) in enumerate(
                zip(
                    self.names,
                    self.weights,
                    self.trials,
                    self.best_s,
                    self.untuned,
                    self.workloads,
                    strict=True,
                )
            )
        )

    def status(self) -> TuneProgress:
        tasks = self.task_results()
        elapsed = time.monotonic() - self.start
        left = max(0, self.budget - sum(self.trials))
        eta = left * elapsed / self.new_trials if self.new_trials else None
        if eta is not None and self.options.time_limit_s is not None:
            eta = min(eta, max(0.0, self.options.time_limit_s - elapsed))
        return TuneProgress(
            trials=sum(self.trials),
            budget=self.budget,
            new_trials=self.new_trials,
            errors=self.errors,
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
            tasks=self.task_results(),
            trials=sum(self.trials),
            budget=self.budget,
            new_trials=self.new_trials,
            errors=self.errors,
            seconds=elapsed,
            total_seconds=float(self.summary.get("seconds", 0.0)) + elapsed,
            stop_reason=reason,
        )

    def write_summary(self) -> None:
        write_summary(self.log_dir, self._summary(self._result("running")))

    def _summary(self, result: TuningResult) -> dict[str, Any]:
        """summary.json: this job's tasks, plus the log's other tasks (other --tasks shares)."""
        import tvm

        mine = {t.name for t in result.tasks}
        others = [
            TaskResult.from_json(t) for t in self.summary.get("tasks", []) if t["name"] not in mine
        ]
        tasks = sorted((*result.tasks, *others), key=lambda t: t.name)
        i, n = self.options.split
        return {
            "summary_version": SUMMARY_VERSION,
            "identity": self.identity.to_json(),
            "model": {"file": self.model.path.name, "sha256": self.model.sha256},
            "preset": self.preset.name,
            "target": dict(self.preset.target),
            "tvmflow_version": __version__,
            "tvm_version": tvm.__version__,
            "trials": len(self.db),
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
                "measured_on": str(self.options.farm.tracker) if self.options.farm else "local",
            },
            "tasks": [t.to_json() for t in tasks],
        }


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


def _shutdown(runner: ms.runner.Runner) -> None:
    """Stop the runner's worker processes now rather than at garbage collection."""
    pool = getattr(runner, "pool", None)
    if pool is not None:
        pool.shutdown(wait=False)


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
