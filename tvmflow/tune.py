"""Tune: MetaSchedule search over a model's kernels, and reuse of its records at compile time.

A log directory holds MetaSchedule's JSON database (`database_workload.json`,
`database_tuning_record.json`) plus tvmflow's `summary.json`. Records are keyed by the
structural hash of each fused kernel, so a log made for one model also serves every other
model with the same operator shapes on the same target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tvmflow.errors import TvmflowError
from tvmflow.manifest import TuningInfo

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir import meta_schedule as ms

SHIPPED_LOGS = Path(__file__).resolve().parent.parent / "tuning_logs"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"


def is_log_dir(path: Path) -> bool:
    return (path / WORKLOADS).is_file() and (path / RECORDS).is_file()


def shipped_log_dirs(preset_name: str) -> list[Path]:
    """Log directories shipped for a preset: `tuning_logs/<preset>/<model>/`."""
    root = SHIPPED_LOGS / preset_name
    return sorted(p for p in root.glob("*") if is_log_dir(p)) if root.is_dir() else []


def open_database(log_dirs: Sequence[Path]) -> ms.database.Database:
    """One read-only view over several log directories (best record wins)."""
    from tvm.s_tir import meta_schedule as ms

    dbs = [
        ms.database.JSONDatabase(
            path_workload=str(d / WORKLOADS),
            path_tuning_record=str(d / RECORDS),
            allow_missing=False,
        )
        for d in log_dirs
    ]
    return dbs[0] if len(dbs) == 1 else ms.database.UnionDatabase(*dbs)


def logs_digest(log_dirs: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for d in log_dirs:
        for name in (WORKLOADS, RECORDS):
            digest.update((d / name).read_bytes())
    return digest.hexdigest()


def check_log_dir(path: Path) -> Path:
    """A user-named log directory must be one `tvmflow tune --log` wrote."""
    if not is_log_dir(path):
        raise TvmflowError(
            f"tuning log {path} is not a tuning log directory (no {WORKLOADS}); pass the "
            "--log directory of `tvmflow tune`"
        )
    return path


def apply_records(
    mod: tvm.IRModule, target: tvm.target.Target, log_dirs: Sequence[Path], total: int
) -> tuple[tvm.IRModule, TuningInfo]:
    """Schedule every kernel a record covers; the rest keep their default schedules."""
    import tvm
    from tvm import relax

    if not log_dirs:
        return mod, TuningInfo(None, 0, total)
    with target, open_database(log_dirs):
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    tuned = sum(
        1
        for _, f in mod.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc) and bool(f.attrs and f.attrs.get("tirx.is_scheduled"))
    )
    return mod, TuningInfo(logs_digest(log_dirs) if tuned else None, tuned, total)
