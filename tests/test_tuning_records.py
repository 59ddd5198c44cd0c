"""Which tuning records compile applies: search results that beat their log's baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
import tvm
from tvm.s_tir import meta_schedule as ms

from tvmflow.frontend import load_onnx, to_relax
from tvmflow.lowering import fuse, kernel_names
from tvmflow.targets import resolve_preset
from tvmflow.tunelog import (
    RECORDS,
    WORKLOADS,
    apply_records,
    improving_records,
    is_baseline,
    logs_digest,
    open_database,
    workload_key,
    write_summary,
)


@pytest.fixture(scope="module")
def fused(zoo_dir: Path) -> tuple[tvm.IRModule, tvm.target.Target]:
    target = tvm.target.Target(resolve_preset("x86").target)
    return fuse(to_relax(load_onnx(zoo_dir / "mlp.onnx", {"x": (1, 64)})), target), target


def _kernel(mod: tvm.IRModule) -> tvm.IRModule:
    """The first matmul kernel as a one-function module (a MetaSchedule workload)."""
    name = next(n for n in kernel_names(mod) if "matmul" in n)
    return tvm.IRModule({"main": mod[name].with_attr("global_symbol", "main")})


def _traces(kernel: tvm.IRModule) -> tuple[tvm.s_tir.Trace, tvm.s_tir.Trace]:
    """A deterministic trace (like a default rule's) and one with a sampling decision."""
    fixed = tvm.s_tir.Schedule(kernel)
    loops = fixed.get_loops(fixed.get_child_blocks(fixed.get_sblock("root"))[0])
    fixed.parallel(loops[0])
    sampled = tvm.s_tir.Schedule(kernel)
    loops = sampled.get_loops(sampled.get_child_blocks(sampled.get_sblock("root"))[0])
    factors = sampled.sample_perfect_tile(loops[-1], n=2)
    sampled.split(loops[-1], factors=factors)
    assert fixed.trace is not None and sampled.trace is not None
    return fixed.trace, sampled.trace


def _log(
    tmp: Path,
    kernel: tvm.IRModule,
    target: tvm.target.Target,
    records: list[tuple[tvm.s_tir.Trace, float]],
) -> Path:
    tmp.mkdir()
    db = ms.database.JSONDatabase(str(tmp / WORKLOADS), str(tmp / RECORDS))
    workload = db.commit_workload(kernel)
    for trace, secs in records:
        db.commit_tuning_record(
            ms.database.TuningRecord(
                trace, workload, [secs], target, ms.arg_info.ArgInfo.from_prim_func(kernel["main"])
            )
        )
    return tmp


def test_baseline_only_log_schedules_nothing(fused, tmp_path: Path) -> None:
    mod, target = fused
    kernel = _kernel(mod)
    fixed, _ = _traces(kernel)
    log = _log(tmp_path / "log", kernel, target, [(fixed, 1e-3)])
    assert improving_records([log]).get_all_tuning_records() == []
    _, info = apply_records(mod, target, [log])
    assert info.tasks_tuned == 0 and info.log_digest == logs_digest([log])  # consulted


def test_search_result_slower_than_baseline_is_not_applied(fused, tmp_path: Path) -> None:
    mod, target = fused
    kernel = _kernel(mod)
    fixed, sampled = _traces(kernel)
    log = _log(tmp_path / "log", kernel, target, [(fixed, 1e-3), (sampled, 2e-3)])
    _, info = apply_records(mod, target, [log])
    assert info.tasks_tuned == 0


def test_search_result_faster_than_baseline_is_applied(fused, tmp_path: Path) -> None:
    mod, target = fused
    kernel = _kernel(mod)
    fixed, sampled = _traces(kernel)
    log = _log(tmp_path / "log", kernel, target, [(fixed, 2e-3), (sampled, 1e-3)])
    kept = improving_records([log]).get_all_tuning_records()
    assert len(kept) == 1 and float(kept[0].run_secs[0]) == pytest.approx(1e-3)
    _, info = apply_records(mod, target, [log])
    assert info.tasks_tuned == 1 and info.log_digest is not None


def test_a_one_core_target_applies_records_without_parallel_loops(fused, tmp_path: Path) -> None:
    """`cpu_single_core`: a one-core artifact's tuned kernels run their loops serially too."""
    from tests.kernels import loop_kinds

    mod, target = fused
    kernel = _kernel(mod)
    fixed, _ = _traces(kernel)
    searched = tvm.s_tir.Schedule(kernel)
    loops = searched.get_loops(searched.get_child_blocks(searched.get_sblock("root"))[0])
    outer, _ = searched.split(loops[0], factors=searched.sample_perfect_tile(loops[0], n=2))
    searched.parallel(outer)
    log = _log(tmp_path / "log", kernel, target, [(fixed, 2e-3), (searched.trace, 1e-3)])
    name = next(n for n in kernel_names(mod) if "matmul" in n)
    kinds = {}
    for cores in (4, 1):
        with_cores = tvm.target.Target({**target.export(), "num-cores": cores})
        tuned, info = apply_records(mod, with_cores, [log])
        assert info.tasks_tuned == 1
        kinds[cores] = loop_kinds(tvm.s_tir.Schedule(tuned[name]))
    assert "parallel" in kinds[4] and "parallel" not in kinds[1]


def _with_check(log: Path, kernel: tvm.IRModule, default_us: float, best_us: float) -> Path:
    """The summary a tuning job writes after re-measuring the best record beside the default."""
    workload = ms.database.JSONDatabase(str(log / WORKLOADS), str(log / RECORDS))
    key = workload_key(workload.get_all_tuning_records()[0].workload)
    task = {"name": "k", "workload": key, "checked_default_us": default_us}
    write_summary(log, {"tasks": [task | {"checked_best_us": best_us}]})
    return log


def test_side_by_side_check_overrides_a_lucky_measurement(fused, tmp_path: Path) -> None:
    """Measured alone the record beat trial 0, measured beside it it lost: not applied."""
    mod, target = fused
    kernel = _kernel(mod)
    fixed, sampled = _traces(kernel)
    records = [(fixed, 2e-3), (sampled, 1e-3)]
    lost = _with_check(_log(tmp_path / "lost", kernel, target, records), kernel, 100.0, 110.0)
    assert improving_records([lost]).get_all_tuning_records() == []
    won = _with_check(_log(tmp_path / "won", kernel, target, records), kernel, 110.0, 100.0)
    assert len(improving_records([won]).get_all_tuning_records()) == 1


def test_records_of_a_preset_apply_to_one_that_only_adds_cpu_features() -> None:
    """x86-avx512's shipped logs serve x86-avx512-vnni (what `x86` picks on VNNI hosts); never
    the other way round, and never across CPU names."""
    from tvmflow.tunelog import SHIPPED_LOGS, shipped_log_dirs, targets_compatible

    avx512 = resolve_preset("x86-avx512").target
    vnni = resolve_preset("x86-avx512-vnni").target
    avx2 = resolve_preset("x86-avx2").target
    assert targets_compatible(avx512, vnni) and not targets_compatible(vnni, avx512)
    assert not targets_compatible(avx2, avx512)
    shipped = set(shipped_log_dirs("x86-avx512"))
    assert shipped and shipped <= set(shipped_log_dirs("x86-avx512-vnni", vnni))
    assert not any(
        SHIPPED_LOGS / "x86-avx512" in d.parents for d in shipped_log_dirs("x86-avx2", avx2)
    )


def test_merge_improving_only_keeps_what_compile_applies(fused, tmp_path: Path) -> None:
    """The form to ship: a log reduced to the records that beat the default schedule."""
    from tvmflow.tunelog import merge_logs

    mod, target = fused
    kernel = _kernel(mod)
    fixed, sampled = _traces(kernel)
    for name, records, kept in (
        ("won", [(fixed, 2e-3), (sampled, 1e-3)], 1),
        ("lost", [(fixed, 1e-3), (sampled, 2e-3)], 0),
    ):
        log = _log(tmp_path / name, kernel, target, records)
        write_summary(log, {"target": {"kind": "llvm"}, "tasks": []})
        merged = merge_logs([log], tmp_path / f"{name}-ship", improving_only=True)
        assert merged.records == kept
        shipped = open_database([merged.out]).get_all_tuning_records()
        assert len(shipped) == kept
        assert all(not is_baseline(r) for r in shipped)
