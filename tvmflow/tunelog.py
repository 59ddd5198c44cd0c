"""Tuning log directories: MetaSchedule's JSON database, tvmflow's summary, a lock, merging.

A log directory holds `database_workload.json` and `database_tuning_record.json` (MetaSchedule's
own format, so stock TVM tools read it), `summary.json` (what was tuned, for whom, how far),
and `logs/` (MetaSchedule's per-task logs). A running job appends to a private copy of the
database in `.work/` and publishes it after every measured batch with temp file + rename, so
a job killed at any moment leaves a database that loads (MetaSchedule's JSONDatabase appends
line by line: a kill mid-line leaves a file it refuses to load).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvmflow.errors import TvmflowError
from tvmflow.manifest import TensorSpec, TuningInfo, check_writable, write_atomic

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir import meta_schedule as ms

SHIPPED_LOGS = Path(__file__).resolve().parent.parent / "tuning_logs"
WORKLOADS = "database_workload.json"
FAILED_SECS = 1e10  # MetaSchedule's run time for a candidate that failed to build or run (s)
RECORDS = "database_tuning_record.json"
SUMMARY = "summary.json"
STAGING = ".work"
LOCK = ".lock"
HOLDER = ".lock.json"
SUMMARY_VERSION = 1


@dataclass(frozen=True)
class LogIdentity:
    """What a log's records were measured for; records of different identities never mix."""

    model_sha256: str
    inputs: tuple[TensorSpec, ...]
    preset: str
    target: dict[str, Any]
    precision: str = "fp32"  # the kernels differ per precision

    def to_json(self) -> dict[str, Any]:
        return {
            "model_sha256": self.model_sha256,
            "inputs": [asdict(t) | {"shape": list(t.shape)} for t in self.inputs],
            "preset": self.preset,
            "target": self.target,
            "precision": self.precision,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogIdentity:
        return cls(
            str(data["model_sha256"]),
            tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            str(data["preset"]),
            dict(data["target"]),
            str(data.get("precision", "fp32")),  # logs from before --precision: fp32
        )

    def describe(self) -> str:
        shapes = ", ".join(t.describe() for t in self.inputs)
        return (
            f"model sha256 {self.model_sha256[:12]} ({shapes}) on {self.preset} "
            f"{self.target} in {self.precision}"
        )


def is_log_dir(path: Path) -> bool:
    return (path / WORKLOADS).is_file() and (path / RECORDS).is_file()


def shipped_log_dirs(preset_name: str, target: dict[str, Any] | None = None) -> list[Path]:
    """Log directories shipped for a preset: `tuning_logs/<preset>/<model>/`; with `target`,
    also those shipped for other presets whose records run on it (`log_matches_target`)."""
    root = SHIPPED_LOGS / preset_name
    own = sorted(p for p in root.glob("*") if is_log_dir(p)) if root.is_dir() else []
    if target is None or not SHIPPED_LOGS.is_dir():
        return own
    others = sorted(
        p
        for p in SHIPPED_LOGS.glob("*/*")
        if p.parent != root and is_log_dir(p) and log_matches_target(p, target)
    )
    return own + others


def check_log_dir(path: Path) -> Path:
    """A user-named log directory must be one `tvmflow tune --log` wrote."""
    if not is_log_dir(path):
        raise TvmflowError(
            f"tuning log {path} is not a tuning log directory (no {WORKLOADS}); pass the "
            "--log directory of `tvmflow tune`"
        )
    return path


def open_database(log_dirs: Sequence[Path]) -> ms.database.Database:
    """One read-only view over several log directories (best record wins)."""
    from tvm.s_tir import meta_schedule as ms

    for d in log_dirs:
        check_database(d)
    dbs = [
        ms.database.JSONDatabase(
            path_workload=str(d / WORKLOADS),
            path_tuning_record=str(d / RECORDS),
            allow_missing=False,
        )
        for d in log_dirs
    ]
    return dbs[0] if len(dbs) == 1 else ms.database.UnionDatabase(*dbs)


def check_database(path: Path) -> None:
    """Every line of a log's database must parse: MetaSchedule's loader stops at the first bad
    one (a file cut mid-write, an edit) with an error that names neither file nor line."""
    for name, (lineno, why) in _damage(path).items():
        raise TvmflowError(
            f"tuning log file {path / name} is damaged at line {lineno} ({why}); restore it, "
            f"or keep the records that parse with `tvmflow tune ... --log {path} --repair-log`"
        )


def repair_database(path: Path) -> tuple[int, list[Path]]:
    """Keep the database lines that parse (records renumbered to the workloads kept); the
    damaged files are kept beside them as `*.damaged`. Returns (lines dropped, backups)."""
    if not _damage(path):
        return 0, []
    workloads, records = _lines(path / WORKLOADS), _lines(path / RECORDS)
    renumber: dict[int, int] = {}
    kept_workloads: list[str] = []
    for index, line in enumerate(workloads):
        if _line_problem(WORKLOADS, line, len(workloads)) is None:
            renumber[index] = len(kept_workloads)
            kept_workloads.append(line)
    kept_records: list[str] = []
    for line in records:
        if _line_problem(RECORDS, line, len(workloads)) is None:
            record = json.loads(line)
            if record[0] in renumber:
                record[0] = renumber[record[0]]
                kept_records.append(json.dumps(record, separators=(",", ":")))
    backups = []
    for name, kept in ((WORKLOADS, kept_workloads), (RECORDS, kept_records)):
        backup = path / f"{name}.damaged"
        if backup.exists():
            backup = path / f"{name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.copyfile(path / name, backup)
        backups.append(backup)
        write_atomic(path / name, "".join(f"{line}\n" for line in kept).encode())
    dropped = len(workloads) + len(records) - len(kept_workloads) - len(kept_records)
    return dropped, backups


def _lines(file: Path) -> list[str]:
    """A database file's non-empty lines (bytes that are not UTF-8 are damage, not an error)."""
    if not file.is_file():
        return []
    text = file.read_bytes().decode("utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip()]


def _damage(path: Path) -> dict[str, tuple[int, str]]:
    """The first damaged line of each database file: {file name: (line number, why)}."""
    found = {}
    workloads = len(_lines(path / WORKLOADS))
    for name in (WORKLOADS, RECORDS):
        for lineno, line in enumerate(_lines(path / name), start=1):
            why = _line_problem(name, line, workloads)
            if why is not None:
                found[name] = (lineno, why)
                break
    return found


def _line_problem(name: str, line: str, workloads: int) -> str | None:
    """Why one database line would not load, or None (MetaSchedule's JSON line format)."""
    try:
        entry = json.loads(line)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if name == WORKLOADS:
        if not (
            isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)
        ):
            return "not a [hash, module] workload entry"
        try:
            base64.b64decode(entry[1], validate=True)
        except ValueError:
            return "its module is not valid base64"
        return None
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
        return "not a [workload, record] entry"
    if not isinstance(entry[0], int) or not 0 <= entry[0] < workloads:
        return f"refers to workload {entry[0]!r}, but the log has {workloads}"
    record = entry[1]
    if len(record) != 4 or not isinstance(record[0], list) or not isinstance(record[2], dict):
        return "not a [trace, run_secs, target, args] record"
    return None


def logs_digest(log_dirs: Sequence[Path]) -> str:
    """One sha256 over the databases a build used (recorded in its manifest)."""
    digest = hashlib.sha256()
    for d in log_dirs:
        for name in (WORKLOADS, RECORDS):
            digest.update((d / name).read_bytes())
    return digest.hexdigest()


def read_summary(path: Path) -> dict[str, Any] | None:
    """The log's summary.json, or None when there is none."""
    file = path / SUMMARY
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TvmflowError(f"{file} is not valid JSON ({exc}); use another --log") from exc
    if not isinstance(data, dict):
        raise TvmflowError(f"{file} is not a tvmflow tuning summary; use another --log")
    return data


def write_summary(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path / SUMMARY, (json.dumps(data, indent=2) + "\n").encode())


def summary_identity(summary: dict[str, Any]) -> LogIdentity | None:
    """The identity recorded in a summary; None for a log merged from several models."""
    ident = summary.get("identity")
    return None if ident is None else LogIdentity.from_json(ident)


def targets_compatible(recorded: dict[str, Any], target: dict[str, Any]) -> bool:
    """The recorded target's code runs as is on `target`: equal dicts apart from the thread
    count (not part of the code) and CPU features `target` adds (`mattr`: x86-avx512's records
    are x86-avx512-vnni's too, whose only difference is what its int8 kernels may use)."""

    def strip(t: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in t.items() if k not in ("num-cores", "mattr")}

    extra = set(target.get("mattr", ())) - set(recorded.get("mattr", ()))
    adds_only = set(recorded.get("mattr", ())) <= set(target.get("mattr", ()))
    return strip(recorded) == strip(target) and adds_only and all(f.startswith("+") for f in extra)


def log_target(path: Path) -> dict[str, Any] | None:
    """The target a log was tuned for (from its summary), or None when it does not say."""
    summary = read_summary(path)
    target = summary.get("target") if summary else None
    return dict(target) if isinstance(target, dict) else None


def log_matches_target(path: Path, target: dict[str, Any]) -> bool:
    """Whether a log's records are for this target (logs that do not say are trusted)."""
    recorded = log_target(path)
    return recorded is None or targets_compatible(recorded, target)


def check_new_or_log(path: Path, flag: str) -> None:
    """Before any work: `path` can hold a tuning log: a writable new or empty folder, or a log
    (the user's other files are never mixed with a log's)."""
    check_writable(path, flag)
    if is_log_dir(path) or not path.is_dir():
        return
    ours = {"logs", LOCK, HOLDER, STAGING, SUMMARY, WORKLOADS, RECORDS}
    theirs = sorted(p.name for p in path.iterdir() if p.name not in ours)
    if theirs:
        shown = ", ".join(theirs[:5]) + (", ..." if len(theirs) > 5 else "")
        raise TvmflowError(
            f"{flag} {path} is not empty and not a tuning log (it holds {shown}); pass a new or "
            "empty directory"
        )


def check_log_for_job(path: Path, identity: LogIdentity) -> dict[str, Any] | None:
    """Refuse a log made for another model, shapes or target, or a folder that is no log;
    returns its summary if any."""
    check_new_or_log(path, "--log")
    summary = read_summary(path) if path.is_dir() else None
    if summary is None:
        if is_log_dir(path):
            raise TvmflowError(
                f"{path} holds a tuning database that `tvmflow tune` did not write (no "
                f"{SUMMARY}), so its records may be for another model or target; pass an empty "
                "or new --log directory"
            )
        return None
    theirs = summary_identity(summary)
    if theirs is None:
        raise TvmflowError(
            f"{path} was merged from logs of several models; records are never mixed, so tune "
            "into a new --log directory"
        )
    if theirs != identity:
        raise TvmflowError(
            f"{path} was made for {theirs.describe()}, not for this job's {identity.describe()}; "
            "records are never mixed: pass another --log directory"
        )
    return summary


@contextmanager
def locked(path: Path) -> Iterator[dict[str, Any] | None]:
    """Hold the log's lock for a job; a second job is refused with the holder's pid and host.

    Yields the note of a previous holder that was killed (it never removed its note), after
    clearing what it left: its working copy and candidates, a summary saying "running".
    """
    from filelock import FileLock, Timeout

    path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TvmflowError(
            f"{path} is in use by another tuning job ({_holder(path)}); wait for it to finish "
            "or pass another --log directory"
        ) from None
    try:
        killed = _clear_killed_job(path)
        note = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        write_atomic(path / HOLDER, json.dumps(note).encode())
        yield killed
    finally:
        (path / HOLDER).unlink(missing_ok=True)
        lock.release()


def _clear_killed_job(path: Path) -> dict[str, Any] | None:
    """Under the lock, a holder note means its job died without cleaning up (kill -9, power
    loss): remove its working copy and mark its summary as killed, not running."""
    try:
        note = json.loads((path / HOLDER).read_text())
    except (OSError, ValueError):
        return None
    unstage(path)
    summary = read_summary(path) if (path / SUMMARY).is_file() else None
    last = summary.get("last_job") if summary else None
    if summary is not None and isinstance(last, dict) and last.get("stopped") == "running":
        last["stopped"] = "killed"
        write_summary(path, summary)
    return note if isinstance(note, dict) else {}


def _holder(path: Path) -> str:
    import psutil

    try:
        note = json.loads((path / HOLDER).read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(note["started"])))
        holder = f"pid {note['pid']} on {note['host']}, started {started}"
        if note["host"] == socket.gethostname() and not psutil.pid_exists(int(note["pid"])):
            holder += (
                ", which has exited: a process it started still holds the lock "
                f"(`fuser {path / LOCK}` names it)"
            )
        return holder
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def candidates_dir(path: Path) -> Path:
    """Where a job's candidate libraries are built: inside its working copy, so the next job
    clears what a killed one left."""
    return path / STAGING / "candidates"


def stage(path: Path) -> Path:
    """A private working copy of the log's database for a job to append to."""
    check_database(path)
    work = path / STAGING
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in (WORKLOADS, RECORDS):
        if (path / name).is_file():
            shutil.copyfile(path / name, work / name)
    return work


def publish(path: Path) -> None:
    """Make the working copy the log's database: each file replaced atomically.

    Workloads go first: the workload table only grows at its end, so the published records
    (which index into it) stay valid whichever of the two renames a kill falls between.
    """
    work = path / STAGING
    for name in (WORKLOADS, RECORDS):
        write_atomic(path / name, (work / name).read_bytes())


def unstage(path: Path) -> None:
    shutil.rmtree(path / STAGING, ignore_errors=True)


@dataclass(frozen=True)
class MergeResult:
    """What `merge_logs` wrote."""

    out: Path
    workloads: int
    records: int
    duplicates: int


def merge_logs(
    sources: Sequence[Path], out: Path, best_only: bool = False, improving_only: bool = False
) -> MergeResult:
    """Union tuning logs of one target into `out` (duplicate records dropped).

    With `best_only`, only the fastest record of each workload is kept. With
    `improving_only`, only the records compile would apply (`improving_records`: each
    kernel's best where it beat the default schedule): what to ship in `tuning_logs/`, where
    baselines and losing records would only add megabytes of workloads. Logs for different
    targets are refused: records are never mixed.
    """
    from tvm.s_tir import meta_schedule as ms

    if not sources:
        raise TvmflowError("give at least one tuning log to merge")
    summaries = []
    for src in sources:
        check_log_dir(src)
        check_database(src)
        summary = read_summary(src)
        if summary is None:
            raise TvmflowError(
                f"{src} has no {SUMMARY}, so its target is unknown; merge only logs written by "
                "`tvmflow tune`"
            )
        summaries.append(summary)
    targets = {json.dumps(s.get("target"), sort_keys=True) for s in summaries}
    if len(targets) > 1:
        raise TvmflowError(
            "the logs were tuned for different targets (" + "; ".join(sorted(targets)) + "); "
            "merge logs of one target only"
        )
    if out.resolve() in {s.resolve() for s in sources}:
        raise TvmflowError(f"the output {out} is one of the inputs; merge into a new directory")
    check_new_or_log(out, "-o")
    with _removed_on_failure(out), locked(out):
        if is_log_dir(out):
            raise TvmflowError(f"{out} already holds a tuning log; merge into a new directory")
        work = stage(out)
        try:
            merged = ms.database.JSONDatabase(
                path_workload=str(work / WORKLOADS), path_tuning_record=str(work / RECORDS)
            )
            if improving_only:
                kept, duplicates = improving_records(sources).get_all_tuning_records(), 0
            else:
                dbs = [open_database([s]) for s in sources]
                kept, duplicates = _union_records(dbs, best_only)
            for record in kept:
                workload = merged.commit_workload(record.workload.mod)
                merged.commit_tuning_record(
                    ms.database.TuningRecord(
                        record.trace, workload, record.run_secs, record.target, record.args_info
                    )
                )
            count = len(merged)
            publish(out)
        finally:
            unstage(out)
        write_summary(out, _merged_summary(summaries, sources, count))
        workloads = len((out / WORKLOADS).read_text().splitlines())
    return MergeResult(out, workloads, count, duplicates)


@contextmanager
def _removed_on_failure(out: Path) -> Iterator[None]:
    """A merge that fails leaves no output directory it created (nor its lock file)."""
    created = not out.exists()
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _union_records(
    dbs: Sequence[ms.database.Database], best_only: bool
) -> tuple[list[ms.database.TuningRecord], int]:
    """All distinct records (same workload and same trace counts once), or each workload's best."""
    from tvm_ffi import structural_hash

    seen: set[tuple[str, str]] = set()
    kept = []
    best: dict[str, ms.database.TuningRecord] = {}
    hashes: dict[ms.database.Workload, str] = {}  # records of one database share workloads
    duplicates = 0
    records = [r for db in dbs for r in db.get_all_tuning_records()]
    for record in records:
        if record.workload not in hashes:
            hashes[record.workload] = str(structural_hash(record.workload.mod))
        wkey = hashes[record.workload]
        key = (wkey, str(record.trace))
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        if not best_only:
            kept.append(record)
        elif mean_secs(record.run_secs) < (
            mean_secs(best[wkey].run_secs) if wkey in best else float("inf")
        ):
            best[wkey] = record
    return (list(best.values()) if best_only else kept), duplicates


def mean_secs(run_secs: Sequence[Any] | None) -> float:
    """A record's mean measured time; FAILED_SECS when it has none (it never ran)."""
    values = [float(s) for s in run_secs or ()]
    return sum(values) / len(values) if values else FAILED_SECS


def _merged_summary(
    summaries: Sequence[dict[str, Any]], sources: Sequence[Path], records: int
) -> dict[str, Any]:
    """One identity when all inputs share it (the merge can be resumed); else none."""
    identities = {json.dumps(s.get("identity"), sort_keys=True) for s in summaries}
    same = len(identities) == 1 and summaries[0].get("identity") is not None
    tasks: dict[str, dict[str, Any]] = {}
    if same:
        for summary in summaries:
            for task in summary.get("tasks", []):
                prev = tasks.get(task["name"])
                if prev is None:
                    tasks[task["name"]] = dict(task)
                    continue
                prev["trials"] += task["trials"]
                bests = [b for b in (prev.get("best_us"), task.get("best_us")) if b is not None]
                prev["best_us"] = min(bests) if bests else None
    first = summaries[0]
    return {
        "summary_version": SUMMARY_VERSION,
        "identity": first.get("identity") if same else None,
        "model": first.get("model") if same else None,
        "preset": first.get("preset"),
        "target": first.get("target"),
        "trials": records,
        "seconds": round(sum(float(s.get("seconds", 0.0)) for s in summaries), 3),
        "merged_from": [str(s) for s in sources],
        "tasks": sorted(tasks.values(), key=lambda t: str(t["name"])),
    }


def apply_records(
    mod: tvm.IRModule, target: tvm.target.Target, log_dirs: Sequence[Path]
) -> tuple[tvm.IRModule, TuningInfo]:
    """Schedule every kernel a search result improves; the rest keep their default schedules.

    Records match kernels by workload (the structural hash of the fused TIR function), not by
    model: a record tuned on one model applies to every model with the same kernel.
    """
    import tvm
    from tvm import relax

    from tvmflow.schedules.cpu_single_core import single_core

    def is_kernel(f: object) -> bool:
        return isinstance(f, tvm.tirx.PrimFunc)

    total = sum(1 for _, f in mod.functions_items() if is_kernel(f))
    if not log_dirs:
        return mod, TuningInfo(None, 0, total)
    if any(b'["Tensorize",' in (d / RECORDS).read_bytes() for d in log_dirs):
        register_tensor_intrinsics(target)  # a tensorized trace names its intrinsic
    records = improving_records(log_dirs)
    if single_core(target):  # a one-core artifact has no parallel loops, tuned ones neither
        records = serial_records(records)
    with target, records:
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    tuned = sum(
        1
        for _, f in mod.functions_items()
        if is_kernel(f) and bool(f.attrs and f.attrs.get("tirx.is_scheduled"))
    )
    return mod, TuningInfo(logs_digest(log_dirs), tuned, total)  # consulted, even if none won


def improving_records(log_dirs: Sequence[Path]) -> ms.database.Database:
    """Per kernel, the fastest search result, kept only where it beat its log's baseline.

    A log also holds each kernel's default schedule as measured when it was tuned (trial 0:
    a deterministic trace, with no Sample* instructions). Applying that record would pin the
    default rules of that day and bypass today's (and their weight prepacking), so compile
    applies a record only when the search found something faster than that baseline. Where
    the tuning job re-measured the best record and the default side by side (`checked_*` in
    its summary), that verdict decides instead: it is the comparison under equal load.
    """
    from tvm.s_tir import meta_schedule as ms

    searched: dict[str, tuple[ms.database.TuningRecord, Path]] = {}
    baseline: dict[str, float] = {}
    for log in log_dirs:
        for record in open_database([log]).get_all_tuning_records():
            if not record.run_secs:
                continue
            key, secs = workload_key(record.workload), mean_secs(record.run_secs)
            if not is_baseline(record):
                if key not in searched or secs < mean_secs(searched[key][0].run_secs):
                    searched[key] = (record, log)
            else:
                baseline[key] = min(secs, baseline.get(key, secs))
    checks = {log: _checks(log) for log in log_dirs}
    db = ms.database.MemoryDatabase()
    for key, (record, log) in searched.items():
        check = checks[log].get(key)
        if check is not None:
            better = check[1] < check[0]
        else:
            better = mean_secs(record.run_secs) < baseline.get(key, float("inf"))
        if better:
            workload = db.commit_workload(record.workload.mod)
            db.commit_tuning_record(
                ms.database.TuningRecord(
                    record.trace, workload, record.run_secs, record.target, record.args_info
                )
            )
    return db


def serial_records(db: ms.database.Database) -> ms.database.Database:
    """`db`'s records with their traces' parallel loops run serially (`cpu_single_core`)."""
    from tvm.s_tir import meta_schedule as ms

    from tvmflow.schedules.cpu_single_core import serial_trace

    out = ms.database.MemoryDatabase()
    for record in db.get_all_tuning_records():
        out.commit_tuning_record(
            ms.database.TuningRecord(
                serial_trace(record.trace),
                out.commit_workload(record.workload.mod),
                record.run_secs,
                record.target,
                record.args_info,
            )
        )
    return out


def _checks(log: Path) -> dict[str, tuple[float, float]]:
    """Per workload, the side-by-side (default µs, best µs) of the log's last tuning job."""
    try:
        summary = read_summary(log) or {}
    except TvmflowError:
        return {}
    return {
        str(t["workload"]): (float(t["checked_default_us"]), float(t["checked_best_us"]))
        for t in summary.get("tasks", [])
        if t.get("workload") and t.get("checked_default_us") and t.get("checked_best_us")
    }


def workload_key(workload: ms.database.Workload) -> str:
    """What records are keyed by: the structural hash of the kernel, whatever model it came from."""
    return str(workload.as_json()[0])


def is_baseline(record: ms.database.TuningRecord) -> bool:
    """Trial 0: a kernel's default schedule as tune measured it (a trace without sampling)."""
    return not any(inst.kind.name.startswith("Sample") for inst in record.trace.insts)


@dataclass(frozen=True)
class LogKernel:
    """One kernel of a log: its trials, its default schedule's and its best record's time."""

    name: str
    weight: int | None  # calls per inference in the tuned model (None: unknown)
    trials: int
    default_us: float | None
    best_us: float | None
    checked: tuple[float, float] | None = None  # (default µs, best µs) side by side

    @property
    def speedup(self) -> float | None:
        """Over the default: the side-by-side check's ratio where the tuning job made one."""
        if self.checked is not None:
            return self.checked[0] / self.checked[1]
        if self.default_us is None or self.best_us is None:
            return None
        return self.default_us / self.best_us


def log_kernels(path: Path) -> tuple[LogKernel, ...]:
    """Per kernel in a log's database, named from its summary where the summary says."""
    check_log_dir(path)
    summary = read_summary(path) or {}
    tasks = {t["workload"]: t for t in summary.get("tasks", []) if t.get("workload")}
    trials: dict[str, int] = {}
    best: dict[str, float] = {}
    default: dict[str, float] = {}
    labels: dict[str, str] = {}
    for record in open_database([path]).get_all_tuning_records():
        key = workload_key(record.workload)
        if key not in labels:
            labels[key] = tasks.get(key, {}).get("name") or _label(record.workload.mod, key)
        trials[key] = trials.get(key, 0) + 1
        secs = mean_secs(record.run_secs)
        if secs >= FAILED_SECS:
            continue
        best[key] = min(secs, best.get(key, secs))
        if is_baseline(record):
            default[key] = min(secs, default.get(key, secs))
    rows = []
    for key, name in labels.items():
        task = tasks.get(key, {})
        default_us = default[key] * 1e6 if key in default else task.get("untuned_us")
        rows.append(
            LogKernel(
                name,
                task.get("weight"),
                trials[key],
                None if default_us is None else float(default_us),
                best[key] * 1e6 if key in best else None,
                _checks(path).get(key),
            )
        )
    return tuple(sorted(rows, key=lambda r: r.name))


def _label(mod: tvm.IRModule, key: str) -> str:
    """A kernel without a name in the summary: its blocks, e.g. `conv2d_nchw+T_add#1a2b3c`."""
    import tvm

    sch = tvm.s_tir.Schedule(mod)
    blocks = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
    return "+".join(b for b in blocks if b != "pad_temp") + f"#{int(key):x}"[:7]


def register_tensor_intrinsics(target: tvm.target.Target) -> None:
    """Register the tensor intrinsics (VNNI, NEON dot, tensor cores) of this target's backend.

    MetaSchedule imports `tvm.s_tir.tensor_intrin`, whose `__init__` registers every backend's
    intrinsics, 15-40 s (mostly CUDA's) at the start of every job. tvmflow installs the package
    without running its `__init__` and imports only the backend module the target can use;
    MetaSchedule's own import then finds the package already loaded.
    """
    import importlib
    import importlib.util
    import sys

    package = "tvm.s_tir.tensor_intrin"
    if package not in sys.modules:
        spec = importlib.util.find_spec(package)
        if spec is None:  # pragma: no cover - part of every TVM build
            return
        sys.modules[package] = importlib.util.module_from_spec(spec)
    kind = str(target.kind.name)
    if kind == "llvm":
        triple = str(target.attrs.get("mtriple", ""))
        module = "arm_cpu" if triple.startswith(("aarch64", "arm")) else "x86"
    else:
        module = kind if kind in ("cuda", "rocm", "metal", "hexagon") else ""
    if module:
        importlib.import_module(f"{package}.{module}")
    if module == "x86":  # tvmflow's int8 rules tensorize with their own (fixed) VNNI intrinsics
        from tvmflow.schedules.cpu_int8_matmul import register_own_intrinsics

        register_own_intrinsics()
