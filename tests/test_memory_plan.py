"""tvmflow.memory_plan: intermediates packed into one arena by lifetime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tvmflow
from tvmflow.accuracy import Tolerance, compare, onnxruntime_outputs, output_scales
from tvmflow.inputs import random_inputs
from tvmflow.memory_plan import ALIGNMENT, Interval, pack, plan_function, planned_bytes

SHAPES = {"image": (1, 3, 224, 224)}


def _peak_live(tensors: list[Interval]) -> int:
    """Most bytes live at one binding: no plan can be smaller."""
    last = max(t.last for t in tensors)
    return max(sum(t.size for t in tensors if t.first <= i <= t.last) for i in range(last + 1))


def _check_disjoint(tensors: list[Interval], offsets: list[int], size: int) -> None:
    for i, (a, oa) in enumerate(zip(tensors, offsets, strict=True)):
        assert oa % ALIGNMENT == 0 and oa + a.size <= size
        for b, ob in zip(tensors[i + 1 :], offsets[i + 1 :], strict=True):
            if a.first <= b.last and b.first <= a.last:  # live at the same time
                assert oa + a.size <= ob or ob + b.size <= oa


def test_residual_block_reaches_the_peak_of_live_bytes() -> None:
    # conv -> (pack -> gemm -> inverse) twice, the conv output kept for the residual add:
    # greedy by size alone fragments this (3 x 288 KiB + 2 x 128 KiB), other orders do not
    k = 1024
    # bindings: alloc i, then the call writing it (reading the previous tensor) at i + 1
    tensors = [
        Interval(128 * k, 0, 13),  # conv output, read again by the residual add at 13
        Interval(288 * k, 2, 5),  # pack
        Interval(288 * k, 4, 7),  # gemm
        Interval(128 * k, 6, 9),  # inverse
        Interval(288 * k, 8, 11),  # pack
        Interval(288 * k, 10, 13),  # gemm
        Interval(128 * k, 12, 13),  # inverse + residual
    ]
    offsets, size = pack(tensors)
    _check_disjoint(tensors, offsets, size)
    assert size == _peak_live(tensors) == (128 + 288 + 288) * k


def test_random_lifetimes_never_overlap_in_memory() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        tensors = []
        for _ in range(int(rng.integers(1, 40))):
            first = int(rng.integers(0, 60))
            size = int(rng.integers(1, 1000)) * ALIGNMENT
            tensors.append(Interval(size, first, first + int(rng.integers(0, 12))))
        offsets, size = pack(tensors)
        _check_disjoint(tensors, offsets, size)
        assert size >= _peak_live(tensors)


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tvmflow import zoo

    return zoo.save("mobilenet_v2", tmp_path_factory.mktemp("zoo"))


def test_arena_is_smaller_than_static_storages_on_mobilenet(mobilenet: Path) -> None:
    import tvm
    from tvm.relax import backend, transform

    from tvmflow.frontend import load_onnx
    from tvmflow.lowering import LoweringOptions, empty_constants_allocated, lower
    from tvmflow.targets import resolve_preset

    preset = resolve_preset("x86")
    lowered = lower(load_onnx(mobilenet, SHAPES), preset, LoweringOptions())
    up_to_static_plan = tvm.transform.Sequential(
        [
            backend.DispatchSampling(),
            backend.DispatchSortScan(),
            transform.LegalizeOps(),
            transform.RewriteDataflowReshape(),
            transform.ToNonDataflow(),
            transform.RemovePurityChecking(),
            transform.CallTIRRewrite(),
            transform.StaticPlanBlockMemory(),
        ]
    )
    with tvm.target.Target(preset.target):
        main = up_to_static_plan(empty_constants_allocated(lowered.mod))["main"]
    planned = plan_function(main)
    assert planned is not None
    assert "arena" in planned.script() and "ensure_zero_offset" in planned.script()
    assert planned_bytes(planned) < 0.8 * planned_bytes(main)


def test_arena_artifact_matches_onnxruntime_run_after_run(mobilenet: Path, tmp_path: Path) -> None:
    """Compiled through the arena pipeline (compile verifies twice); here three more runs on
    other inputs must each match onnxruntime: no tensor overwrote one still needed."""
    artifact = tvmflow.compile(mobilenet, "x86", output=tmp_path / "mb", input_shapes=SHAPES)
    model = tvmflow.load(artifact.directory)
    for seed in (1, 2, 3):
        feeds = random_inputs(model.inputs, seed)
        expected = onnxruntime_outputs(mobilenet, feeds)
        accuracy = compare(model.run(feeds), expected)
        scales = output_scales(expected)
        assert all(Tolerance().passes(a, scales[a.name]) for a in accuracy)
