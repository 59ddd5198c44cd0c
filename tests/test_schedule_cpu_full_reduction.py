"""FullReduction: whole-tensor max/min/sum with vector partial results (rfactor)."""

from __future__ import annotations

import pytest
from tvm import relax

from tests.kernels import AVX512, TARGET, assert_schedule_matches, loop_kinds, only_kernel
from tvmflow.schedules.cpu_full_reduction import FullReduction


@pytest.mark.parametrize(
    ("op", "shape"),
    [(relax.op.max, (128, 1024)), (relax.op.min, (4, 33, 64)), (relax.op.sum, (96, 40))],
    ids=["max", "min-3d", "sum-fused-loops"],
)
def test_whole_tensor_reductions_are_vectorized_and_correct(op, shape):
    func = only_kernel({"x": (shape, "float32")}, lambda x: op(x))
    sch = FullReduction().apply(func, TARGET, False)
    assert sch is not None
    assert "vectorized" in loop_kinds(sch)
    assert_schedule_matches(func, sch)


def test_row_reductions_and_tiny_tensors_are_left_to_other_rules():
    row = only_kernel({"x": ((64, 256), "float32")}, lambda x: relax.op.max(x, axis=[1]))
    tiny = only_kernel({"x": ((4, 8), "float32")}, lambda x: relax.op.max(x))
    assert FullReduction().apply(row, AVX512, False) is None
    assert FullReduction().apply(tiny, AVX512, False) is None
