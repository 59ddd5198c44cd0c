"""RowNorm: softmax / layer norm / RMS norm rows with vector partial reductions, one parallel
loop over rows, same results as the unscheduled kernel."""

from __future__ import annotations

import pytest
import tvm
from tvm import relax

from tests.kernels import (
    AVX2,
    NEON,
    TARGET,
    assert_schedule_matches,
    const,
    loop_kinds,
    lowers_for,
    only_kernel,
)
from tvmflow.schedules import kernel_rules
from tvmflow.schedules.cpu_row_norm import RowNorm


def _softmax(shape: tuple[int, ...]):
    return only_kernel({"x": (shape, "float32")}, lambda x: relax.op.nn.softmax(x, axis=-1))


def _layer_norm(shape: tuple[int, ...]):
    c = shape[-1]
    return only_kernel(
        {"x": (shape, "float32")},
        lambda x: relax.op.nn.layer_norm(x, const((c,)), const((c,), 1), axes=[-1], epsilon=1e-5),
    )


# ViT's 197 tokens and Swin's 49 leave a partial last vector; BERT's 128 do not
@pytest.mark.parametrize(
    "shape", [(1, 3, 197, 197), (2, 4, 128, 128), (1, 12, 49, 49), (3, 40)], ids=str
)
def test_softmax_rows_match_unscheduled(shape):
    func = _softmax(shape)
    sch = RowNorm().apply(func, TARGET, False)
    assert sch is not None
    assert "vectorized" in loop_kinds(sch)
    assert_schedule_matches(func, sch)


@pytest.mark.parametrize("shape", [(1, 197, 192), (2, 7, 100), (8, 768), (4, 3, 20)], ids=str)
def test_layer_norm_rows_match_unscheduled(shape):
    func = _layer_norm(shape)
    sch = RowNorm().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


def test_one_loop_over_rows_and_vector_partial_sums():
    sch = RowNorm().apply(_layer_norm((1, 197, 192)), TARGET, False)
    assert sch is not None
    assert "vectorized" in loop_kinds(sch)
    # every block runs under the one (merged) row loop: the kernel's body is that loop
    assert isinstance(sch.mod["main"].body.block.body, tvm.tirx.For)
    # the row's mean and variance are summed into vector partial results in registers
    assert "local" in sch.mod["main"].script()


def test_elementwise_epilogue_after_the_norm_is_fused_in():
    func = only_kernel(
        {"x": ((1, 50, 64), "float32"), "y": ((1, 50, 64), "float32")},
        lambda x, y: relax.op.add(
            relax.op.nn.layer_norm(x, const((64,)), const((64,), 1), axes=[-1]), y
        ),
    )
    sch = RowNorm().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


def test_mean_and_variance_of_a_whole_tensor():
    # GroupNorm with one group, as ONNX exports spell it: two whole-tensor reductions
    func = only_kernel(
        {"x": ((1, 1, 10037), "float32")},
        lambda x: relax.op.sqrt(
            relax.op.add(relax.op.variance(x, axis=[2], keepdims=True), relax.const(1e-5))
        ),
    )
    sch = RowNorm().apply(func, TARGET, False)
    assert sch is not None
    assert "vectorized" in loop_kinds(sch)
    assert_schedule_matches(func, sch)


def test_reductions_over_other_axes_are_not_claimed():
    # a softmax over columns: the reduced axis is not the innermost one
    columns = only_kernel({"x": ((64, 48), "float32")}, lambda x: relax.op.nn.softmax(x, axis=0))
    plain = only_kernel({"x": ((64, 48), "float32")}, lambda x: relax.op.sum(x, axis=[1]))
    # one whole-tensor reduction is FullReduction's
    whole = only_kernel({"x": ((1, 4096), "float32")}, lambda x: relax.op.mean(x))
    for func in (columns, plain, whole):
        assert RowNorm().apply(func, TARGET, False) is None


def test_default_rules_pick_it_for_softmax():
    from tests.kernels import fused_module

    mod = fused_module({"x": ((1, 2, 16, 64), "float32")}, lambda x: relax.op.nn.softmax(x))
    assert set(kernel_rules(mod, TARGET).values()) == {"RowNorm"}


def test_other_cpus():
    func = _softmax((2, 8, 40))
    sch = RowNorm().apply(func, AVX2, False)
    assert_schedule_matches(func, sch, AVX2)
    lowers_for(RowNorm().apply(_layer_norm((4, 96)), NEON, False), NEON)
