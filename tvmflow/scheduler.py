"""MetaSchedule extension points for `tune`: a batch-at-a-time gradient scheduler and a callback.

MetaSchedule's stock GradientBased scheduler sends one batch of every task to measurement before
it records any result, and afterwards keeps each task's latest batch unrecorded until that task
is picked again, so a job killed early can leave an empty database. `BatchScheduler` applies the
same gradient rule (alpha 0.2, window 3) but records each batch before choosing the next, and
asks its hooks at every batch boundary whether to stop (budget, time limit, Ctrl-C, farm gone).
This module imports TVM; `tune` imports it on first use.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from tvmflow.tunelog import FAILED_SECS


class BatchHooks(Protocol):
    """What the scheduler asks of the tuning job."""

    def first_boundary(self, scheduler: ms.task_scheduler.TaskScheduler) -> None:
        """Called once, after MetaSchedule initialized the tasks, before the first batch."""

    def task_capped(self, task_id: int) -> bool: ...

    def stop_reason(self) -> str | None:
        """Why no further batch should start (checked at every batch boundary)."""

    def stop_reason_now(self) -> str | None:
        """`stop_reason` without slow checks (e.g. asking a device farm)."""

    def best_seconds(self, task_id: int) -> float | None: ...

    def batch_done(
        self,
        task_id: int,
        builds: Sequence[ms.builder.BuilderResult],
        runs: Sequence[ms.runner.RunnerResult],
    ) -> None:
        """Called right after AddToDatabase recorded a batch."""


@derived_object
class BatchScheduler(ms.task_scheduler.PyTaskScheduler):
    """Gradient task scheduling with at most one batch in flight."""

    alpha = 0.2
    window = 3
    patience = 4  # batches without a new best after which a task counts as stalled

    def __init__(self, hooks: BatchHooks, weights: Sequence[float], seed: int | None) -> None:
        super().__init__()
        self.hooks = hooks
        self.weights = list(weights)
        self.rng = random.Random(seed)
        self.pending: int | None = None
        self.history: list[list[float]] = [[] for _ in weights]
        self.started = False
        self.stopped_because: str | None = None

    def next_task_id(self) -> int:
        outer = self._outer()
        tasks = outer.tasks_
        if self.pending is not None:
            record = tasks[self.pending]
            if not record.is_terminated and record.runner_futures is not None:
                outer.join_running_task(self.pending)  # runs the callbacks: recorded on disk
            best = self.hooks.best_seconds(self.pending)
            self.history[self.pending].append(FAILED_SECS if best is None else best)
            self.pending = None
        if not self.started:
            self.started = True
            self.hooks.first_boundary(outer)
        alive = []
        for i, task in enumerate(tasks):
            if task.is_terminated:
                continue
            if self.hooks.task_capped(i):
                outer.terminate_task(i)
                continue
            alive.append(i)
        reason = self.hooks.stop_reason()
        if reason is not None or not alive:
            self.stopped_because = reason
            return -1
        self.pending = self._pick(alive)
        return self.pending

    def _pick(self, alive: list[int]) -> int:
        fresh = [i for i in alive if not self.history[i]]
        if fresh:  # every task gets one batch before gradients can be compared
            return fresh[0]
        # budget goes to tasks whose search still finds better schedules; stalled ones get
        # batches again only once every task has stalled
        alive = [i for i in alive if not self.stalled(i)] or alive
        grads = []
        for i in alive:
            hist = self.history[i]
            n, best = len(hist), hist[-1]
            if best >= FAILED_SECS:
                grads.append(-1e9)
                continue
            g1 = (hist[-1 - self.window] - best) / self.window if n > self.window else 0.0
            g2 = best / n
            grads.append((self.alpha * g1 + (1 - self.alpha) * g2) * self.weights[i])
        if max(grads) == min(grads):
            return self.rng.choice(alive)
        return alive[grads.index(max(grads))]

    def stalled(self, task_id: int) -> bool:
        """No new best in the task's last `patience` batches."""
        hist = self.history[task_id]
        return len(hist) > self.patience and hist[-1] >= hist[-1 - self.patience]


@derived_object
class Checkpoint(ms.measure_callback.PyMeasureCallback):
    """Hands each recorded batch to the job (which publishes it and reports progress)."""

    def __init__(self, hooks: BatchHooks) -> None:
        self.hooks = hooks

    def apply(
        self,
        task_scheduler: Any,
        task_id: int,
        measure_candidates: Any,
        builder_results: Any,
        runner_results: Any,
    ) -> None:
        self.hooks.batch_done(task_id, list(builder_results), list(runner_results))


@derived_object
class UpdateCostModelUnlessStopping(ms.measure_callback.PyMeasureCallback):
    """MetaSchedule's UpdateCostModel, skipped after the job's last batch (a wasted retrain)."""

    def __init__(self, hooks: BatchHooks) -> None:
        self.hooks = hooks
        self.inner = ms.measure_callback.UpdateCostModel()

    def apply(
        self,
        task_scheduler: Any,
        task_id: int,
        measure_candidates: Any,
        builder_results: Any,
        runner_results: Any,
    ) -> None:
        if self.hooks.stop_reason_now() is None:
            self.inner.apply(
                task_scheduler, task_id, measure_candidates, builder_results, runner_results
            )


def measure_callbacks(hooks: BatchHooks) -> list[Any]:
    """MetaSchedule's default callbacks, with the checkpoint right after the database write."""
    return [
        ms.measure_callback.AddToDatabase(),
        Checkpoint(hooks),
        ms.measure_callback.RemoveBuildArtifact(),
        UpdateCostModelUnlessStopping(hooks),
    ]
