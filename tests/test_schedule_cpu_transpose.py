"""Transpose: injective kernels reading an input across its contiguous dim get that dim's
vectors innermost, same results as the unscheduled kernel."""

from __future__ import annotations

from tvm import relax

from tests.kernels import (
    AVX2,
    NEON,
    TARGET,
    assert_schedule_matches,
    loop_kinds,
    lowers_for,
    only_kernel,
)
from tvmflow.schedules.cpu_transpose import Transpose


def _gelu(x: relax.Expr) -> relax.Expr:
    half = relax.const(0.5, "float32")
    root2 = relax.const(1.4142135, "float32")
    one = relax.const(1.0, "float32")
    erf = relax.op.erf(relax.op.divide(x, root2))
    return relax.op.multiply(relax.op.multiply(x, relax.op.add(erf, one)), half)


def test_channel_last_to_first_with_gelu_matches_unscheduled():
    # wav2vec2's feature extractor: [T, C] -> [C, T] with GELU fused; T has a remainder
    func = only_kernel(
        {"x": ((1, 1001, 128), "float32")}, lambda x: _gelu(relax.op.permute_dims(x, [0, 2, 1]))
    )
    sch = Transpose().apply(func, TARGET, False)
    assert sch is not None
    assert {"parallel", "vectorized"} <= loop_kinds(sch)
    assert_schedule_matches(func, sch)


def test_nhwc_to_nchw_matches_unscheduled():
    func = only_kernel(
        {"x": ((2, 30, 40, 64), "float32")}, lambda x: relax.op.permute_dims(x, [0, 3, 1, 2])
    )
    sch = Transpose().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


def test_whole_vector_rows_go_through_register_tiles():
    """SegFormer's tokens back to a feature map, [4096, 128] -> [128, 64, 64]: output rows
    16 KiB apart evicted each other from L1 at every scalar store (1.6 ms); a vector-square
    tile copied in with vector loads and written with vector stores takes 0.28 ms."""
    func = only_kernel(
        {"x": ((1, 4096, 128), "float32")},
        lambda x: relax.op.reshape(relax.op.permute_dims(x, [0, 2, 1]), (1, 128, 64, 64)),
    )
    sch = Transpose().apply(func, TARGET, False)
    assert sch is not None
    assert 'scope="local"' in sch.mod["main"].script()
    assert {"parallel", "vectorized"} <= loop_kinds(sch)
    assert_schedule_matches(func, sch)
    # rows of 1001 are not whole vectors: one vector of the input's dim innermost instead
    ragged = only_kernel(
        {"x": ((1, 1001, 128), "float32")}, lambda x: relax.op.permute_dims(x, [0, 2, 1])
    )
    sch = Transpose().apply(ragged, TARGET, False)
    assert sch is not None and "local" not in sch.mod["main"].script()


def test_contiguous_or_small_transposes_are_left_to_elementwise():
    # the head split keeps the contiguous dim last; a key transpose fits in L2
    heads = only_kernel(
        {"x": ((1, 197, 3, 64), "float32")}, lambda x: relax.op.permute_dims(x, [0, 2, 1, 3])
    )
    small = only_kernel(
        {"x": ((1, 3, 197, 64), "float32")}, lambda x: relax.op.permute_dims(x, [0, 1, 3, 2])
    )
    assert Transpose().apply(heads, TARGET, False) is None
    assert Transpose().apply(small, TARGET, False) is None


def test_other_cpus():
    func = only_kernel(
        {"x": ((1, 2000, 64), "float32")}, lambda x: relax.op.permute_dims(x, [0, 2, 1])
    )
    sch = Transpose().apply(func, AVX2, False)
    assert sch is not None
    assert_schedule_matches(func, sch, AVX2)
    lowers_for(Transpose().apply(func, NEON, False), NEON)
