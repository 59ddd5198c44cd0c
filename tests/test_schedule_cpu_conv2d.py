"""cpu_conv2d.Conv2d: conv2d as a register-tiled implicit GEMM (NCHW data, HWIO weights)."""

from __future__ import annotations

import pytest
from tvm import relax

from tests.kernels import (
    AVX2,
    AVX512,
    NEON,
    TARGET,
    assert_schedule_matches,
    const,
    fused_kernels,
    loop_kinds,
    lowers_for,
    only_kernel,
)
from tvmflow.schedules import cpu_conv2d
from tvmflow.schedules.cpu_common import pick_tile
from tvmflow.schedules.cpu_conv2d import NARROW_TILE_ROWS, Conv2d


def _conv(cin, cout, hw, k=3, stride=1, pad=None, epilogue=True, batch=1):
    pad = k // 2 if pad is None else pad

    def body(x):
        y = relax.op.nn.conv2d(x, const((cout, cin, k, k)), strides=stride, padding=pad)
        if epilogue:  # bias + hardswish: an epilogue that reads its input twice
            y = relax.op.add(y, const((1, cout, 1, 1), 1))
            y = relax.op.multiply(y, relax.op.clip(relax.op.add(y, relax.const(3.0)), 0, 6))
        return y

    return only_kernel({"x": ((batch, cin, hw[0], hw[1]), "float32")}, body)


@pytest.mark.parametrize(
    "case",
    [
        dict(cin=16, cout=32, hw=(14, 14)),
        dict(cin=3, cout=24, hw=(17, 19), k=7, stride=2),
        dict(cin=8, cout=5, hw=(9, 9), k=1, epilogue=False),
        dict(cin=6, cout=12, hw=(11, 7), k=1, stride=2, epilogue=False),
        dict(cin=5, cout=7, hw=(13, 10), k=3, pad=0),
        dict(cin=4, cout=16, hw=(6, 6), batch=2),
        # short reductions (1-3 input channels, stride 1): row tiles
        dict(cin=1, cout=32, hw=(12, 16)),
        dict(cin=3, cout=34, hw=(9, 24), batch=2),
        dict(cin=1, cout=33, hw=(7, 8), epilogue=False),
        dict(cin=3, cout=32, hw=(32, 32), stride=2),  # stem: staged in column phases
        dict(cin=3, cout=32, hw=(31, 33), stride=2, pad=0),  # odd input row: a padded phase
    ],
)
def test_conv_matches_unscheduled(case):
    func = _conv(**case)
    sch = Conv2d().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


def test_conv_is_tiled_vectorized_parallel_and_prepacks_weights():
    sch = Conv2d().apply(_conv(16, 32, (14, 14)), TARGET, False)
    assert sch is not None
    assert {"parallel", "vectorized", "unrolled"} <= loop_kinds(sch)
    assert "layout_rewrite_preproc" in sch.mod["main"].script()


@pytest.mark.parametrize(
    ("cin", "stride", "cout", "rows"),
    [
        (1, 1, 32, True),
        (3, 1, 32, True),
        (3, 2, 32, True),
        (3, 3, 32, False),
        (4, 1, 32, False),
        (3, 2, 16, False),
    ],
    ids=["spectrogram", "rgb", "stem", "stride-3", "4-channels", "one-channel-vector"],
)
def test_short_reductions_get_row_tiles(monkeypatch, cin, stride, cout, rows):
    """Convs over 1-3 input channels with stride 1 or 2 and more than one vector of output
    channels vectorize along the output row (the input row is contiguous there, or in its
    column phases); others keep channel tiles."""
    taken: list[int] = []
    original = cpu_conv2d._row_gemm

    def row_gemm(*args):
        taken.append(1)
        return original(*args)

    monkeypatch.setattr(cpu_conv2d, "_row_gemm", row_gemm)
    func = _conv(cin, cout, (16, 32), stride=stride)
    sch = Conv2d().apply(func, AVX512, False)
    assert sch is not None and bool(taken) == rows
    assert {"vectorized", "unrolled"} <= loop_kinds(sch)


def test_row_tile_is_two_channels_by_the_row_vectors_that_fit():
    assert cpu_conv2d.row_tile(32, 112, 16, 32) == (2, 7, 16)  # stem: 7 vectors per row
    assert cpu_conv2d.row_tile(32, 120, 16, 32) == (2, 5, 8)
    assert cpu_conv2d.row_tile(32, 128, 16, 16) == (2, 4, 16)  # AVX2's 16 registers
    assert cpu_conv2d.row_tile(5, 16, 16, 32) == (1, 1, 16)


def test_depthwise_and_non_conv_are_not_claimed():
    depthwise = only_kernel(
        {"x": ((1, 8, 9, 9), "float32")},
        lambda x: relax.op.nn.conv2d(x, const((8, 1, 3, 3)), padding=1, groups=8),
    )
    dense = only_kernel({"x": ((4, 8), "float32")}, lambda x: relax.op.matmul(x, const((8, 16))))
    for func in (depthwise, dense):
        assert Conv2d().apply(func, TARGET, False) is None


@pytest.mark.parametrize(
    ("cin", "cout", "groups", "stride", "batch", "pad", "epilogue"),
    [
        (8, 8, 4, 1, 1, 1, True),
        (8, 16, 4, 2, 1, 1, True),
        (64, 64, 4, 1, 2, 1, True),
        (48, 48, 3, 2, 1, 1, True),
        (8, 8, 2, 1, 1, 0, False),  # the conv reads the kernel's input, writes its output
    ],
)
def test_grouped_conv_is_a_gemm_per_group(cin, cout, groups, stride, batch, pad, epilogue):
    """Grouped convs (RegNet, ResNeXt) were left to DLight's Reduction rule: 1.6 GFLOP/s,
    RegNetY-800MF 21x onnxruntime. Split into groups they get the GEMM micro-kernel."""

    def body(x):
        y = relax.op.nn.conv2d(
            x, const((cout, cin // groups, 3, 3)), strides=stride, padding=pad, groups=groups
        )
        return relax.op.nn.relu(relax.op.add(y, const((1, cout, 1, 1), 1))) if epilogue else y

    func = only_kernel({"x": ((batch, cin, 11, 11), "float32")}, body)
    sch = Conv2d().apply(func, TARGET, False)
    assert sch is not None
    assert {"parallel", "vectorized"} <= loop_kinds(sch)
    assert_schedule_matches(func, sch)


def _unrolled_extents(sch):
    import tvm
    import tvm_ffi

    found: set[int] = set()

    def visit(node):
        if node.kind == tvm.tirx.ForKind.UNROLLED and isinstance(node.extent, tvm.tirx.IntImm):
            found.add(int(node.extent))

    tvm_ffi.structural_walk(sch.mod["main"].body, [(tvm.tirx.For, visit)], order="post")
    return found


def test_narrow_tiles_get_more_rows():
    """A tile one vector wide has one accumulator per row: 8 rows left the FMA pipes waiting."""
    assert pick_tile(56, 16, 16, 32) == (8, 1, 16)
    assert pick_tile(56, 16, 16, 32, narrow_rows=14) == (14, 1, 16)
    assert pick_tile(56, 8, 16, 32, narrow_rows=14) == (14, 1, 8)  # 8 channels per group
    assert pick_tile(56, 48, 16, 32, narrow_rows=14) == (8, 3, 16)  # wide tiles: unchanged


@pytest.mark.parametrize("groups", [2, 4])  # 16 and 8 channels per group
def test_grouped_conv_narrow_tile(groups):
    """RegNetY's 16-wide and ResNeXt's 8-wide groups over a 14-wide map: 14-row tiles, as
    compiled and as the first design space tuning searches (its rows a sampled knob)."""

    def body(x):
        y = relax.op.nn.conv2d(x, const((32, 32 // groups, 3, 3)), padding=1, groups=groups)
        return relax.op.nn.relu(relax.op.add(y, const((1, 32, 1, 1), 1)))

    func = only_kernel({"x": ((1, 32, 14, 14), "float32")}, body)
    sch = Conv2d().apply(func, AVX512, False)
    assert sch is not None and NARROW_TILE_ROWS in _unrolled_extents(sch)
    assert_schedule_matches(func, sch, AVX512)
    space = Conv2d().design_spaces(func, AVX512)[0]
    assert NARROW_TILE_ROWS in _unrolled_extents(space)
    assert_schedule_matches(func, space, AVX512)
    avx2 = only_kernel({"x": ((1, 32, 14, 14), "float32")}, body, AVX2)
    sch = Conv2d().apply(avx2, AVX2, False)  # 16 registers: 14 rows spilled
    assert sch is not None and NARROW_TILE_ROWS not in _unrolled_extents(sch)


def test_other_cpus():
    func = _conv(8, 24, (10, 10))
    assert_schedule_matches(func, Conv2d().apply(func, AVX2, False), AVX2)
    lowers_for(Conv2d().apply(func, NEON, False), NEON)


def test_grouped_conv_on_other_cpus():
    """16 channels per group: two AVX2 vectors, four NEON vectors per group."""

    def body(x):
        return relax.op.nn.conv2d(x, const((64, 16, 3, 3)), padding=1, groups=4)

    func = only_kernel({"x": ((1, 64, 9, 9), "float32")}, body, AVX2)
    assert_schedule_matches(func, Conv2d().apply(func, AVX2, False), AVX2)
    func = only_kernel({"x": ((1, 64, 9, 9), "float32")}, body, NEON)
    lowers_for(Conv2d().apply(func, NEON, False), NEON)


# (kernel == stride, no padding is a 1x1 conv + pixel shuffle by then: tests/test_upsample_conv.py)
@pytest.mark.parametrize(("k", "stride", "pad"), [(2, 2, 1), (3, 2, 1), (4, 2, 1), (3, 1, 1)])
def test_conv_transpose_matches_unscheduled(k, stride, pad):
    func = only_kernel(
        {"x": ((1, 6, 9, 7), "float32")},
        lambda x: relax.op.nn.relu(
            relax.op.nn.conv2d_transpose(x, const((6, 10, k, k)), strides=stride, padding=pad)
        ),
    )
    sch = Conv2d().apply(func, TARGET, False)
    assert sch is not None
    assert "layout_rewrite_preproc" in sch.mod["main"].script()
    assert_schedule_matches(func, sch)


def test_single_output_channel_vectorizes_along_rows():
    for body in (
        lambda x: relax.op.sigmoid(
            relax.op.nn.conv2d_transpose(x, const((6, 1, 4, 4)), strides=2, padding=1)
        ),
        lambda x: relax.op.nn.conv2d(x, const((1, 6, 3, 3)), padding=1),
    ):
        func = only_kernel({"x": ((1, 6, 12, 16), "float32")}, body)
        sch = Conv2d().apply(func, TARGET, False)
        assert sch is not None
        assert "vectorized" in loop_kinds(sch)
        assert_schedule_matches(func, sch)


def test_epilogue_pad_is_written_whole():
    """An epilogue that writes more values than the conv produces used to be moved under the
    conv's tile loop, where TVM keeps only the iterations that read the tile: the pad's
    border was never written, so the output depended on what the allocator handed back
    (PP-OCRv6 det: wrong border pixels, different from run to run)."""
    func = only_kernel(
        {"x": ((1, 8, 13, 13), "float32")},
        # PP-OCRv6 det: conv + bias + relu, then ONNX Pad(0, 1, 0, 1) for a 2x2 max pool
        lambda x: relax.op.nn.pad(
            relax.op.nn.relu(
                relax.op.add(relax.op.nn.conv2d(x, const((12, 8, 2, 2))), const((1, 12, 1, 1), 1))
            ),
            [0, 0, 0, 0, 0, 1, 0, 1],
        ),
    )
    sch = Conv2d().apply(func, TARGET, False)
    assert sch is not None
    assert {"parallel", "vectorized"} <= loop_kinds(sch)
    assert_schedule_matches(func, sch)


def test_grouped_conv1d_is_claimed():
    """wav2vec2's positional conv: conv1d, kernel 128 (here 9), 16 groups (here 4)."""
    kernels = fused_kernels(
        {"x": ((1, 32, 40), "float32")},
        lambda x: relax.op.nn.conv1d(x, const((32, 8, 9)), padding=4, groups=4),
    )
    # lowering makes conv1d a height-1 conv2d (tvmflow/conv1d.py): reshapes around the conv
    (func,) = (f for name, f in kernels.items() if "conv" in name)
    sch = Conv2d().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)
