"""scheduler.BatchScheduler: where the next batch goes."""

from __future__ import annotations

from tvmflow.scheduler import BatchScheduler


def _scheduler(history: list[list[float]]) -> BatchScheduler:
    sched = BatchScheduler(hooks=None, weights=[1.0] * len(history), seed=0)  # type: ignore[arg-type]
    sched.history = history
    return sched


def test_budget_moves_away_from_a_stalled_task() -> None:
    # task 0 is slow (the gradient rule favours it) but its last batches found nothing better
    stalled, improving = [100.0] * 6, [2.0, 1.9, 1.8]
    sched = _scheduler([stalled, improving])
    assert sched.stalled(0) and not sched.stalled(1)
    assert sched._pick([0, 1]) == 1
    # without the stall, the gradient rule sends the batch to the slow task
    assert _scheduler([[100.0, 99.0, 98.0, 97.0, 96.0, 95.0], improving])._pick([0, 1]) == 0


def test_stalled_tasks_get_batches_again_once_all_have_stalled() -> None:
    sched = _scheduler([[100.0] * 6, [2.0] * 6])
    assert sched._pick([0, 1]) == 0
