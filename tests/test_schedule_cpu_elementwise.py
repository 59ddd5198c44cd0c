"""cpu_elementwise.Elementwise: injective kernels get parallel + vectorized loops, same results."""

from __future__ import annotations

import pytest
import tvm
from tvm import relax, s_tir

from tests.kernels import (
    AVX2,
    NEON,
    TARGET,
    assert_schedule_matches,
    const,
    kernel_named,
    loop_kinds,
    lowers_for,
    only_kernel,
)
from tvmflow.schedules.cpu_elementwise import Elementwise

SINGLE_CORE = tvm.target.Target({**TARGET.export(), "num-cores": 1})


def _bias_relu(shape: tuple[int, ...]):
    c = shape[1]
    return only_kernel(
        {"x": (shape, "float32")},
        lambda x: relax.op.nn.relu(
            relax.op.add(relax.op.multiply(x, const((1, c, 1, 1))), const((1, c, 1, 1), 1))
        ),
    )


@pytest.mark.parametrize("shape", [(1, 16, 30, 48), (1, 13, 7, 9), (2, 3, 1, 1), (1, 5, 17, 37)])
def test_elementwise_chain_matches_unscheduled(shape):
    func = _bias_relu(shape)
    sch = Elementwise().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


def test_wide_rows_are_vectorized_and_parallel():
    sch = Elementwise().apply(_bias_relu((1, 16, 30, 48)), TARGET, False)
    assert {"parallel", "vectorized"} <= loop_kinds(sch)


def test_pad_and_transpose_match_unscheduled():
    pad = only_kernel(
        {"x": ((1, 6, 11, 13), "float32")}, lambda x: relax.op.nn.pad(x, [0, 0, 0, 0, 1, 2, 3, 1])
    )
    transpose = only_kernel(
        {"x": ((1, 5, 7, 64), "float32")}, lambda x: relax.op.permute_dims(x, [0, 2, 1, 3])
    )
    for func in (pad, transpose):
        sch = Elementwise().apply(func, TARGET, False)
        assert sch is not None
        assert_schedule_matches(func, sch)


def test_one_long_row_is_split_for_threads():
    func = only_kernel({"x": ((1, 1, 16384), "float32")}, lambda x: relax.op.tanh(x))
    sch = Elementwise().apply(func, TARGET, False)
    assert {"parallel", "vectorized"} <= loop_kinds(sch)
    assert_schedule_matches(func, sch)


def test_reductions_are_not_claimed():
    func = only_kernel({"x": ((4, 32), "float32")}, lambda x: relax.op.sum(x, axis=[1]))
    assert Elementwise().apply(func, TARGET, False) is None


def test_reduction_over_one_element_is_not_claimed():
    """A 1x1 depthwise conv reduces over extents of 1: injective once normalized, yet a
    reduction block with an init (scheduled as elementwise it computed wrong values). Its
    weight is an input: DepthwiseScaleAsMultiply rewrites constant-weight ones as a multiply."""
    func = kernel_named(
        "fused_conv2d",
        {"x": ((1, 8, 6, 6), "float32"), "w": ((8, 1, 1, 1), "float32")},
        lambda x, w: relax.op.add(relax.op.nn.conv2d(x, w, groups=8), x),
    )
    assert Elementwise().apply(func, TARGET, False) is None


def _concat_bn_relu(channels: tuple[int, ...], hw: int):
    """DenseNet's pre-activation: concat of earlier features, BN (inference), ReLU."""
    inputs: dict[str, tuple[tuple[int, ...], str]] = {
        f"x{i}": ((1, c, hw, hw), "float32") for i, c in enumerate(channels)
    }
    total = sum(channels)

    def body(*xs):
        cat = relax.op.concat(list(xs), axis=1)
        scaled = relax.op.multiply(
            relax.op.subtract(cat, const((1, total, 1, 1))), const((1, total, 1, 1), 1)
        )
        return relax.op.nn.relu(relax.op.add(scaled, const((1, total, 1, 1), 2)))

    return only_kernel(inputs, body)


def _loop_extents(sch) -> set[int]:
    import tvm_ffi

    found: set[int] = set()
    tvm_ffi.structural_walk(
        sch.mod["main"].body, [(tvm.tirx.For, lambda f: found.add(int(f.extent)))], order="pre"
    )
    return found


def _writing_blocks(sch) -> int:
    import tvm_ffi

    found: list[int] = []
    tvm_ffi.structural_walk(
        sch.mod["main"].body,
        [(s_tir.stmt.SBlock, lambda b: found.append(1) if b.writes else None)],
        order="pre",
    )
    return len(found)


@pytest.mark.parametrize("target", [TARGET, SINGLE_CORE])
def test_concat_is_split_into_vectorized_copies(target):
    """Each concat input gets its own loop and block (its select chain then folds away) and
    the 14 x 14 maps are fused into one vectorizable run."""
    func = _concat_bn_relu((24, 8, 8, 8, 16), 14)
    sch = Elementwise().apply(func, target, False)
    assert sch is not None
    assert _writing_blocks(sch) == 5
    assert 14 * 14 in _loop_extents(sch)  # LLVM vectorizes it with a remainder
    assert_schedule_matches(func, sch, target)


@pytest.mark.parametrize("axis", [1, 2, 3])
@pytest.mark.parametrize("target", [TARGET, SINGLE_CORE], ids=["cores", "one-core"])
def test_concat_on_any_axis_matches_unscheduled(axis, target):
    """Pieces whose split loop starts past 0 are inner or middle loops here (UNet's
    concat after a pixel shuffle, ShuffleNet's channel split): same results."""
    shapes = [[2, 24, 10, 40], [2, 24, 10, 40]]
    shapes[1][axis] = 24 if axis != 3 else 8
    inputs: dict[str, tuple[tuple[int, ...], str]] = {
        "a": (tuple(shapes[0]), "float32"),
        "b": (tuple(shapes[1]), "float32"),
    }
    func = only_kernel(
        inputs, lambda a, b: relax.op.nn.leakyrelu(relax.op.concat([a, b], axis=axis), 0.1)
    )
    sch = Elementwise().apply(func, target, False)
    assert sch is not None
    assert _writing_blocks(sch) == 2
    assert_schedule_matches(func, sch, target)


@pytest.mark.parametrize("target", [TARGET, SINGLE_CORE, AVX2], ids=["cores", "one-core", "avx2"])
def test_a_transposed_concat_piece_goes_through_register_tiles(target):
    """SegFormer's decoder: tokens [4096, 64] back to a 64 x 64 map, concatenated with two
    feature maps. Its piece read the tokens across their rows (7.8 ms at 256 channels);
    tiled, rows come in as vectors (1.4 ms). The maps' pieces, which never read the tokens,
    get no tile (their out-of-range token index is not copied)."""

    def body(tokens, a, b):
        back = relax.op.reshape(relax.op.permute_dims(tokens, [0, 2, 1]), (1, 64, 64, 64))
        return relax.op.concat([a, b, back], axis=1)

    inputs = {
        "tokens": ((1, 4096, 64), "float32"),
        "a": ((1, 32, 64, 64), "float32"),
        "b": ((1, 32, 64, 64), "float32"),
    }
    func = only_kernel(inputs, body, target)
    sch = Elementwise().apply(func, target, False)
    assert sch is not None
    assert sch.mod["main"].script().count('scope="local"') == 1
    assert_schedule_matches(func, sch, target)


def _pixel_shuffle(x, c: int, hw: int):
    """An upsampling conv's pixel shuffle (tvmflow.upsample_conv), then a bias."""
    x = relax.op.reshape(x, [1, c, 2, 2, hw, hw])
    x = relax.op.permute_dims(x, [0, 1, 4, 2, 5, 3])
    x = relax.op.reshape(x, [1, c, 2 * hw, 2 * hw])
    return relax.op.add(x, const((1, c, 1, 1)))


@pytest.mark.parametrize("target", [TARGET, SINGLE_CORE], ids=["cores", "one-core"])
def test_pixel_shuffle_runs_in_phases(target):
    """Output columns split into (column // 2, phase), the phase unrolled, on the plain
    kernel and on a concat's piece (UNet: shuffled upsample, then concat with the skip)."""
    plain = only_kernel({"x": ((1, 64, 16, 16), "float32")}, lambda x: _pixel_shuffle(x, 16, 16))
    concat = only_kernel(
        {"x": ((1, 64, 16, 16), "float32"), "skip": ((1, 8, 32, 32), "float32")},
        lambda x, skip: relax.op.concat([_pixel_shuffle(x, 16, 16), skip], axis=1),
    )
    for func in (plain, concat):
        sch = Elementwise().apply(func, target, False)
        assert sch is not None
        assert "unrolled" in loop_kinds(sch)
        assert_schedule_matches(func, sch, target)


def test_other_cpus():
    func = _bias_relu((1, 8, 9, 24))
    sch = Elementwise().apply(func, AVX2, False)
    assert_schedule_matches(func, sch, AVX2)
    lowers_for(Elementwise().apply(func, NEON, False), NEON)
