"""Tuning jobs end to end on the zoo MLP: records, summary, resume, stops, kill -9, split/merge.

Budgets are tiny (batches of 4, population 32) so the file stays CI-sized; the search itself is
MetaSchedule's, measured on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from tests.conftest import ZOO_SHAPES
from tvmflow.cli import main
from tvmflow.compile import CompileOptions, compile_model
from tvmflow.frontend import ImportedModel, load_onnx
from tvmflow.targets import resolve_preset
from tvmflow.tune import TuneOptions, TuneProgress, TuningResult, tune_model
from tvmflow.tunelog import improving_records, logs_digest, open_database, read_summary

BATCH = 4
FAST = TuneOptions(batch_size=BATCH, population=32, min_repeat_ms=10)
FAST_FLAGS = ["--batch-size", "4", "--population", "32"]


class RecordingSink:
    """A ProgressSink that keeps what it was told (and can act on each batch)."""

    def __init__(self, on_batch=None) -> None:
        self.starts: list[TuneProgress] = []
        self.batches: list[TuneProgress] = []
        self.messages: list[str] = []
        self.result: TuningResult | None = None
        self.on_batch = on_batch

    def started(self, progress: TuneProgress) -> None:
        self.starts.append(progress)

    def batch_done(self, progress: TuneProgress) -> None:
        self.batches.append(progress)
        if self.on_batch:
            self.on_batch(progress)

    def message(self, text: str) -> None:
        self.messages.append(text)

    def finished(self, result: TuningResult) -> None:
        self.result = result


@pytest.fixture(scope="module")
def mlp(zoo_dir: Path) -> ImportedModel:
    return load_onnx(zoo_dir / "mlp.onnx", ZOO_SHAPES["mlp"])


@pytest.fixture(scope="module")
def mlp_log(tmp_path_factory: pytest.TempPathFactory, mlp: ImportedModel):
    """The MLP tuned once with 10 trials; tests copy it before changing it."""
    log = tmp_path_factory.mktemp("tune") / "mlp"
    sink = RecordingSink()
    result = tune_model(mlp, resolve_preset("x86"), log, replace(FAST, trials=10), sink)
    return log, result, sink


def _copy(log: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "log"
    shutil.copytree(log, dest)
    return dest


def test_tune_writes_records_summary_and_progress(mlp_log, mlp: ImportedModel) -> None:
    log, result, sink = mlp_log
    assert result.stop_reason == "trial budget reached"
    assert result.trials >= 10 and result.new_trials == result.trials
    assert len(open_database([log])) == result.trials  # every measured trial is on disk
    summary = read_summary(log)
    assert summary is not None
    assert summary["model"]["sha256"] == mlp.sha256
    assert summary["target"] == resolve_preset("x86").target
    assert summary["trials"] == result.trials
    assert summary["seconds"] > 0
    assert summary["last_job"]["stopped"] == "trial budget reached"
    assert {t["name"] for t in summary["tasks"]} == {t.name for t in result.tasks}
    for task in summary["tasks"]:
        assert task["trials"] >= 1
        assert task["untuned_us"] > 0 and task["best_us"] > 0
        # the untuned schedule is trial 0 in the log, so the best can only be as fast or faster
        assert task["best_us"] <= task["untuned_us"]
        # the speedup is the side-by-side re-measurement's where the job ran one, else the log's
        if task["checked_best_us"] is not None:
            ratio = task["checked_default_us"] / task["checked_best_us"]
        else:
            ratio = task["untuned_us"] / task["best_us"]
        assert task["speedup"] == pytest.approx(ratio, rel=1e-2)
    assert summary["estimated_latency_us"] == pytest.approx(result.estimated_us, rel=1e-3)
    # progress: a start, one report per batch with growing trial counts, the final result
    assert sink.starts and sink.result is result
    counts = [p.trials for p in sink.batches]
    assert counts == sorted(counts) and counts[-1] == result.trials
    assert all(p.budget == 10 for p in sink.batches)
    assert sink.batches[-1].estimated_us is not None
    assert not (log / ".work").exists() and not (log / ".lock.json").exists()


def _improved_kernels(log: Path) -> int:
    """Kernels whose best search result beat the untuned schedule: in the side-by-side check
    at the end of the job where there was one, else as measured (`improving_records`)."""
    return len(improving_records([log]).get_all_tuning_records())


def test_compile_uses_the_tuned_log(mlp_log, mlp: ImportedModel, tmp_path: Path) -> None:
    log, _, _ = mlp_log
    options = CompileOptions(tuning_logs=(log,), use_shipped_logs=False)
    artifact = compile_model(mlp, resolve_preset("x86"), tmp_path / "tuned", options)
    tuning = artifact.manifest.tuning
    # compile applies a kernel's record only where the search beat the untuned trial 0
    improved = _improved_kernels(log)
    assert tuning.tasks_total > 0 and tuning.tasks_tuned == improved
    assert tuning.log_digest == logs_digest([log])  # consulted, whether or not a record won
    assert artifact.manifest.accuracy  # verified against onnxruntime on the way


def test_resume_counts_the_log_and_never_loses_the_best(
    mlp_log, mlp: ImportedModel, tmp_path: Path
) -> None:
    log, first, _ = mlp_log
    log = _copy(log, tmp_path)
    preset = resolve_preset("x86")
    again = tune_model(mlp, preset, log, replace(FAST, trials=first.trials + 4))
    assert again.stop_reason == "trial budget reached"
    assert 1 <= again.new_trials <= 4 + BATCH  # prior trials count toward --trials
    assert again.trials == first.trials + again.new_trials == len(open_database([log]))
    for before, after in zip(first.tasks, again.tasks, strict=True):
        assert after.untuned_us == pytest.approx(before.untuned_us, abs=1e-3)  # measured once
        assert after.best_us is not None and before.best_us is not None
        assert after.best_us <= before.best_us
    summary = read_summary(log)
    assert summary is not None and summary["seconds"] > first.seconds
    # a budget the log already meets starts no search at all
    done = tune_model(mlp, preset, log, replace(FAST, trials=5))
    assert done.new_trials == 0 and done.stop_reason == "trial budget reached"


def test_time_limit_ends_at_a_batch_boundary(zoo_dir: Path, tmp_path: Path, capsys) -> None:
    log = tmp_path / "log"
    args = ["tune", str(zoo_dir / "mlp.onnx"), "-t", "x86", "--input-shape", "x=4,64"]
    rc = main([*args, "--log", str(log), "--trials", "500", "--time-limit", "1s", *FAST_FLAGS])
    out = capsys.readouterr()
    assert rc == 0, out.err
    summary = read_summary(log)
    assert summary is not None
    assert summary["last_job"]["stopped"] == "time limit reached"
    assert summary["trials"] < 500
    assert "speedup" in out.out and "estimated end-to-end" in out.out  # the final table
    assert "tuning stopped (time limit reached)" in out.err


def test_ctrl_c_ends_at_the_next_batch_boundary(mlp: ImportedModel, tmp_path: Path) -> None:
    log = tmp_path / "log"
    sink = RecordingSink(on_batch=lambda p: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        tune_model(mlp, resolve_preset("x86"), log, replace(FAST, trials=100), sink)
    assert sink.result is not None and sink.result.stop_reason == "interrupted"
    assert len(sink.batches) == 1  # the batch being measured finished; no other started
    summary = read_summary(log)
    assert summary is not None and summary["last_job"]["stopped"] == "interrupted"
    assert len(open_database([log])) == summary["trials"] == sink.batches[0].trials
    assert any("Ctrl-C" in m for m in sink.messages)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from tvmflow.cli import run; run()", *args]


def test_kill_9_mid_job_leaves_a_log_that_loads_and_resumes(
    zoo_dir: Path, mlp: ImportedModel, tmp_path: Path, capsys
) -> None:
    log = tmp_path / "log"
    model = str(zoo_dir / "mlp.onnx")
    job = subprocess.Popen(
        _cli("tune", model, "-t", "x86", "--input-shape", "x=4,64", "--log", str(log),
             "--trials", "500", *FAST_FLAGS),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a group to clean up with, should the test fail
    )  # fmt: skip
    try:
        seen = 0
        deadline = time.monotonic() + 600
        while seen < 2 + BATCH:  # the untuned trials and one search batch
            assert job.poll() is None, job.stderr.read().decode() if job.stderr else ""
            assert time.monotonic() < deadline, "no batch recorded in time"
            time.sleep(0.5)
            summary = read_summary(log) if (log / "summary.json").exists() else None
            seen = summary["trials"] if summary else 0
        # a second job on the same log is refused, naming the holder
        rc = main(["tune", model, "-t", "x86", "--input-shape", "x=4,64", "--log", str(log)])
        err = capsys.readouterr().err
        assert rc == 2
        assert f"in use by another tuning job (pid {job.pid} on" in err
        time.sleep(1.0)  # let the next batch get under way
        workers = psutil.Process(job.pid).children(recursive=True)
        assert workers  # MetaSchedule's builder and runner processes
        os.kill(job.pid, signal.SIGKILL)  # the job alone, as `kill -9 PID` does
        job.wait(timeout=60)
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, f"orphaned workers: {alive}"  # they die with their job
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    db = open_database([log])  # loads: every published file is whole
    assert len(db) >= seen
    summary = read_summary(log)
    assert summary is not None and summary["trials"] == len(db)
    # the lock died with the job: the same command resumes, counting what was saved
    resumed = tune_model(mlp, resolve_preset("x86"), log, replace(FAST, trials=len(db) + 1))
    assert resumed.trials >= len(db) + 1
    assert resumed.new_trials <= 1 + BATCH
    # and the killed job's working copy and candidate libraries are gone
    assert not (log / ".work").exists() and not (log / ".lock.json").exists()


@pytest.mark.slow
def test_ctrl_c_from_a_terminal_spares_the_batch_in_flight(zoo_dir: Path, tmp_path: Path) -> None:
    """A terminal sends SIGINT to the whole process group, MetaSchedule's workers included:
    the batch being measured still completes without errors, then the job stops."""
    log = tmp_path / "log"
    job = subprocess.Popen(
        _cli("tune", str(zoo_dir / "mlp.onnx"), "-t", "x86", "--input-shape", "x=4,64",
             "--log", str(log), "--trials", "500", "--batch-size", "8", "--population", "32"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        seen = 0
        while seen < 2 + 1:  # the untuned trials and a search batch are on disk
            assert job.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
            seen = (read_summary(log) or {}).get("trials", 0)
        time.sleep(2.0)  # the next batch is being built or measured
        os.killpg(job.pid, signal.SIGINT)
        _, err = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 130
    assert "tuning stopped (interrupted)" in err.decode()
    summary = read_summary(log)
    assert summary is not None and summary["last_job"]["stopped"] == "interrupted"
    assert summary["last_job"]["errors"] == 0  # no candidate of the last batch was lost
    assert summary["trials"] >= seen and summary["trials"] == len(open_database([log]))


def test_split_tasks_then_merge_covers_every_kernel(
    mlp: ImportedModel, zoo_dir: Path, tmp_path: Path, capsys
) -> None:
    preset = resolve_preset("x86")
    parts = []
    for i in (1, 2):
        part = tmp_path / f"part{i}"
        result = tune_model(mlp, preset, part, replace(FAST, trials=2, split=(i, 2)))
        assert len(result.tasks) == 1
        parts.append((part, result))
    assert parts[0][1].tasks[0].name != parts[1][1].tasks[0].name
    merged = tmp_path / "merged"
    assert main(["logs", "merge", str(parts[0][0]), str(parts[1][0]), "-o", str(merged)]) == 0
    assert "merged 2 log(s)" in capsys.readouterr().out
    total = sum(r.trials for _, r in parts)
    assert len(open_database([merged])) == total
    summary = read_summary(merged)
    assert summary is not None and summary["trials"] == total
    assert summary["identity"] == read_summary(parts[0][0])["identity"]  # type: ignore[index]
    assert len(summary["tasks"]) == 2
    artifact = compile_model(
        mlp, preset, tmp_path / "art", CompileOptions(tuning_logs=(merged,), use_shipped_logs=False)
    )
    assert artifact.manifest.tuning.tasks_total == 2
    assert artifact.manifest.tuning.tasks_tuned == _improved_kernels(merged)
    # the merged log resumes like any other (same model and target)
    more = tune_model(mlp, preset, merged, replace(FAST, trials=total))
    assert more.new_trials == 0
    # merging a log with itself drops the duplicates; --best-only keeps one record per kernel
    twice = tmp_path / "twice"
    assert main(["logs", "merge", str(merged), str(merged), "-o", str(twice)]) == 0
    assert len(open_database([twice])) == total
    best = tmp_path / "best"
    assert main(["logs", "merge", str(merged), "--best-only", "-o", str(best)]) == 0
    assert len(open_database([best])) == 2


# -- bad input: one line, exit code 2 -------------------------------------------------------


def _tune_args(zoo_dir: Path, log: Path, *extra: str) -> list[str]:
    model = str(zoo_dir / "mlp.onnx")
    return ["tune", model, "--input-shape", "x=4,64", "--log", str(log), *extra]


def _fails(capsys, args: list[str], *needles: str) -> str:
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tvmflow: error: "), err
    for needle in needles:
        assert needle in err
    return err


def test_unknown_target(zoo_dir: Path, tmp_path: Path, capsys) -> None:
    _fails(capsys, _tune_args(zoo_dir, tmp_path / "l", "-t", "nope"), "unknown target 'nope'")


def test_unfixed_dynamic_dims(zoo_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["tune", str(zoo_dir / "mlp.onnx"), "-t", "x86", "--log", str(tmp_path / "l")]
    _fails(capsys, args, "dynamic dim", "--input-shape x=")


def test_log_for_another_model_is_refused(mlp_log, zoo_dir: Path, capsys) -> None:
    log = mlp_log[0]
    args = ["tune", str(zoo_dir / "conv_net.onnx"), "-t", "x86", "--log", str(log)]
    _fails(capsys, [*args, "--input-shape", "image=2,3,32,32"], "was made for model", "never mixed")
    # the same model at other shapes is another model too
    other_shape = ["tune", str(zoo_dir / "mlp.onnx"), "-t", "x86", "--input-shape", "x=8,64"]
    _fails(capsys, [*other_shape, "--log", str(log)], "was made for model")


def test_log_for_another_target_is_refused(mlp_log, zoo_dir: Path, capsys, tmp_path) -> None:
    log = mlp_log[0]
    other = "x86-avx2" if resolve_preset("x86").name != "x86-avx2" else "x86-avx512"
    if not resolve_preset(other).runs_on_host():
        pytest.skip(f"{other} does not run here")
    _fails(capsys, _tune_args(zoo_dir, log, "-t", other), "was made for model", other)
    # compile refuses it too: the records would generate code for the other target
    compile_args = ["compile", str(zoo_dir / "mlp.onnx"), "-t", other, "--input-shape", "x=4,64"]
    _fails(
        capsys, [*compile_args, "--tuning-log", str(log), "-o", str(tmp_path / "a")], "tuned for"
    )


def test_foreign_database_is_refused(mlp_log, zoo_dir: Path, tmp_path: Path, capsys) -> None:
    log = _copy(mlp_log[0], tmp_path)
    (log / "summary.json").unlink()
    _fails(capsys, _tune_args(zoo_dir, log, "-t", "x86"), "did not write")


def test_bad_flags(zoo_dir: Path, tmp_path: Path, capsys) -> None:
    log = tmp_path / "l"
    _fails(capsys, _tune_args(zoo_dir, log, "-t", "x86", "--tasks", "3/2"), "i/N")
    _fails(capsys, _tune_args(zoo_dir, log, "-t", "x86", "--time-limit", "soon"), "duration")
    _fails(capsys, _tune_args(zoo_dir, log, "-t", "x86", "--trials", "0"), "--trials")
    _fails(
        capsys,
        _tune_args(zoo_dir, log, "-t", "x86", "--rpc-tracker", "127.0.0.1:9"),
        "--rpc-tracker and --rpc-key",
    )
    assert not log.exists()  # nothing was created for a refused job


def test_merge_refuses_logs_of_different_targets(mlp_log, tmp_path: Path, capsys) -> None:
    a = _copy(mlp_log[0], tmp_path / "a")
    b = _copy(mlp_log[0], tmp_path / "b")
    summary = json.loads((b / "summary.json").read_text())
    summary["target"] = {**summary["target"], "mcpu": "cortex-a72"}
    (b / "summary.json").write_text(json.dumps(summary))
    args = ["logs", "merge", str(a), str(b), "-o", str(tmp_path / "m")]
    _fails(capsys, args, "different targets")


def test_console_progress_draws_a_bar_or_prints_plain_lines() -> None:
    import io

    from tvmflow.progress import ConsoleProgress, format_table
    from tvmflow.tune import TaskResult

    def progress(trials: int, eta: float) -> TuneProgress:
        return TuneProgress(trials, 10, trials, 0, 5.0, eta, 20.0, 60.0, "k")

    result = TuningResult(
        Path("logs/m"), (TaskResult("k", 2, 6, 10.0, 30.0),), 6, 10, 6, 0, 12.0, 12.0, "interrupted"
    )
    bar = io.StringIO()
    sink = ConsoleProgress(bar, tty=True)
    sink.started(progress(2, 30.0))
    sink.batch_done(progress(6, 9.0))
    sink.finished(result)
    drawn = bar.getvalue()
    assert "6/10 trials" in drawn and "ETA 9s, est. 20.0 µs (untuned 60.0 µs)" in drawn
    assert "rerun the same command to continue" in bar.getvalue()
    lines = io.StringIO()
    sink = ConsoleProgress(lines, tty=False, interval_s=3600)
    sink.started(progress(2, 30.0))
    sink.batch_done(progress(6, 9.0))  # within the interval: no line
    assert lines.getvalue().count("\n") == 1 and "tuning: 2/10 trials" in lines.getvalue()
    table = format_table(result)
    assert "k " in table and "3.00x" in table and "estimated end-to-end: 20.00 µs" in table


def test_kernels_that_cannot_move_the_model_are_not_searched() -> None:
    from tvmflow.tune import MIN_TASK_SHARE, _negligible

    # ResNet-18's shape: convs of ~1 ms, a 24 µs mean and a 0.03 µs reshape (weights 2, 1, 1, 1)
    untuned = [1000.0, 900.0, 24.0, 0.03]
    skipped = _negligible([2, 1, 1, 1], untuned)
    assert skipped == {2, 3}
    total = 2 * 1000.0 + 900.0 + 24.0 + 0.03
    assert all(untuned[i] < MIN_TASK_SHARE * total for i in skipped)
    # a kernel called often enough counts by its total time
    assert _negligible([2, 1, 100, 1], untuned) == {3}
    # nothing is left out while a default time is unknown (it failed to build or run)
    assert _negligible([1, 1], [1000.0, None]) == frozenset()


def test_why_a_search_ended_early_is_kept_in_the_summary() -> None:
    from tvmflow.tune import TaskResult

    for end in ("exhausted", "negligible", None):
        task = TaskResult("k", 1, 14, 900.0, 1000.0, "abc", (1000.0, 950.0), end)
        again = TaskResult.from_json(json.loads(json.dumps(task.to_json())))
        assert again == task and again.search_end == end
    # summaries written before the field existed still load
    assert TaskResult.from_json({"name": "k", "weight": 1, "trials": 2}).search_end is None
