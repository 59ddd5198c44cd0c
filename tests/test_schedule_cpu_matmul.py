"""cpu_matmul.Matmul: register-tiled matmul/dense/batch-matmul kernels, same results."""

from __future__ import annotations

import re

import pytest
from tvm import relax

from tests.kernels import (
    AVX2,
    AVX512,
    NEON,
    TARGET,
    assert_schedule_matches,
    const,
    loop_kinds,
    lowers_for,
    only_kernel,
)
from tvmflow.schedules.cpu_common import pick_tile
from tvmflow.schedules.cpu_matmul import Matmul, gemv_tiles


def _dense(m: int, k: int, n: int):
    return only_kernel(
        {"x": ((m, k), "float32")},
        lambda x: relax.op.add(relax.op.matmul(x, const((k, n))), const((n,), 1)),
    )


@pytest.mark.parametrize(
    ("m", "k", "n"), [(128, 64, 96), (13, 37, 23), (1, 50, 1000), (7, 5, 3), (6, 33, 48)]
)
def test_dense_matches_unscheduled(m, k, n):
    func = _dense(m, k, n)
    sch = Matmul().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


def test_dense_is_tiled_vectorized_and_parallel():
    sch = Matmul().apply(_dense(64, 32, 64), TARGET, False)
    assert {"parallel", "vectorized", "unrolled"} <= loop_kinds(sch)


def test_weights_are_prepacked_when_constant():
    sch = Matmul().apply(_dense(16, 32, 64), TARGET, False)
    assert sch is not None
    blocks = [b for b in sch.mod["main"].script().splitlines() if "layout_rewrite_preproc" in b]
    assert blocks, "a constant [K, N] weight is repacked for the micro-kernel"


def test_attention_batch_matmul_with_epilogue():
    func = only_kernel(
        {"q": ((1, 3, 17, 8), "float32"), "k": ((1, 3, 8, 19), "float32")},
        lambda q, k: relax.op.multiply(relax.op.matmul(q, k), relax.const(0.125)),
    )
    sch = Matmul().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


def test_gelu_epilogue_with_reused_value():
    def gelu(x):
        h = relax.op.matmul(x, const((24, 32)))
        return relax.op.multiply(h, relax.op.sigmoid(h))

    func = only_kernel({"x": ((10, 24), "float32")}, gelu)
    sch = Matmul().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


def test_reductions_and_elementwise_are_not_claimed():
    reduce = only_kernel({"x": ((4, 32), "float32")}, lambda x: relax.op.sum(x, axis=[1]))
    relu = only_kernel({"x": ((4, 32), "float32")}, lambda x: relax.op.nn.relu(x))
    conv = only_kernel(
        {"x": ((1, 4, 8, 8), "float32")}, lambda x: relax.op.nn.conv2d(x, const((8, 4, 3, 3)))
    )
    for func in (reduce, relu, conv):
        assert Matmul().apply(func, TARGET, False) is None


def test_tile_uses_exact_divisors_and_fits_registers():
    for m, n, lanes, regs in [(128, 256, 16, 32), (7, 24, 8, 16), (1, 1000, 16, 32), (5, 3, 4, 32)]:
        mr, nvec, v = pick_tile(m, n, lanes, regs)
        assert m % mr == 0 and n % (nvec * v) == 0
        assert mr * nvec + nvec + 1 <= regs


@pytest.mark.parametrize(
    ("n", "lanes", "regs", "widest"),
    [
        (1000, 16, 32, (1, 5, 8)),
        (384, 16, 32, (1, 8, 16)),
        (384, 8, 16, (1, 6, 8)),
        (24, 16, 32, (1, 3, 8)),
    ],
)
def test_gemv_tiles_keep_accumulators_in_flight(n, lanes, regs, widest):
    """One output row: the widest tile that divides the row and fits the registers first
    (the GEMM preference gave a 1000-wide LM head one accumulator)."""
    tiles = gemv_tiles(n, lanes, regs)
    assert tiles[0] == widest
    for mr, nvec, v in tiles:
        assert mr == 1 and n % (nvec * v) == 0 and 2 * nvec + 1 <= regs


@pytest.mark.parametrize("target", [TARGET, AVX2], ids=["avx512", "avx2"])
def test_decode_step_gemv_matches_unscheduled(target):
    func = only_kernel(
        {"x": ((1, 1, 128), "float32")},
        lambda x: relax.op.matmul(x, const((128, 1000))),
        target,
    )
    sch = Matmul().apply(func, target, False)
    assert sch is not None
    assert "T.unroll(T.int64(5))" in sch.mod["main"].script()  # 5 vectors of 8 per tile
    assert_schedule_matches(func, sch, target)


def test_other_cpus():
    func = _dense(12, 20, 40)
    assert_schedule_matches(func, Matmul().apply(func, AVX2, False), AVX2)
    lowers_for(Matmul().apply(func, NEON, False), NEON)


def test_epilogue_pad_is_written_whole():
    """A Pad after the matmul (values outside every output tile) is written by its own pass."""
    func = only_kernel(
        {"x": ((16, 24), "float32")},
        lambda x: relax.op.nn.pad(relax.op.matmul(x, const((24, 32))), [0, 1, 0, 3]),
    )
    sch = Matmul().apply(func, TARGET, False)
    assert sch is not None
    assert_schedule_matches(func, sch)


@pytest.mark.parametrize(
    ("a", "b", "epilogue"),
    [
        ((1, 3, 197, 64), (1, 3, 64, 197), False),  # ViT attention scores: 197 tokens (prime)
        ((1, 3, 197, 197), (1, 3, 197, 64), True),  # attention x values, scaled after
        ((2, 4, 49, 32), (2, 4, 32, 49), True),  # Swin's 7x7 windows
    ],
)
def test_attention_matmuls_are_padded_to_full_tiles(a, b, epilogue):
    def body(x, y):
        out = relax.op.matmul(x, y)
        return relax.op.multiply(out, relax.const(0.125, "float32")) if epilogue else out

    func = only_kernel({"x": (a, "float32"), "y": (b, "float32")}, body)
    sch = Matmul().apply(func, TARGET, False)
    assert sch is not None
    script = sch.mod["main"].script()
    assert "_pad" in script, "odd token counts are padded, not tiled 1x1"
    assert "vectorized" in loop_kinds(sch)
    assert_schedule_matches(func, sch)
    lowers_for(sch, TARGET)


def test_padded_columns_leave_no_predicate_in_vectorized_loops():
    """CoAtNet's attention scores + relative position bias (196 tokens): cropping padded
    columns inside the tile put a lane predicate in the write-back, which scalarized it and
    the bias add (3x slower); the epilogue runs as its own pass instead."""
    import tvm
    import tvm_ffi
    from tvm import s_tir

    func = only_kernel(
        {"x": ((1, 2, 196, 32), "float32"), "y": ((1, 2, 32, 196), "float32")},
        lambda x, y: relax.op.add(relax.op.matmul(x, y), const((1, 2, 196, 196))),
    )
    sch = Matmul().apply(func, TARGET, False)
    assert sch is not None
    predicated: list[str] = []

    def visit(loop: tvm.tirx.For) -> None:
        if loop.kind != tvm.tirx.ForKind.VECTORIZED:
            return

        def realize(node: s_tir.stmt.SBlockRealize) -> None:
            if not isinstance(node.predicate, tvm.tirx.IntImm):
                predicated.append(node.block.name_hint)

        tvm_ffi.structural_walk(loop.body, [(s_tir.stmt.SBlockRealize, realize)], order="pre")

    tvm_ffi.structural_walk(sch.mod["main"].body, [(tvm.tirx.For, visit)], order="pre")
    assert predicated == []
    assert_schedule_matches(func, sch)


def test_dense_over_a_prime_token_count_pads_rows_and_keeps_the_prepacked_weight():
    func = _dense(197, 64, 192)  # a ViT MLP: 197 tokens
    sch = Matmul().apply(func, TARGET, False)
    assert sch is not None
    script = sch.mod["main"].script()
    assert "_pad" in script and "layout_rewrite_preproc" in script
    assert_schedule_matches(func, sch)


@pytest.mark.parametrize(("m", "n"), [(26, 821), (1, 1003), (16, 30522 // 6)])
def test_constant_weight_with_awkward_n_is_padded_into_the_prepack(m, n):
    """ddddocr's 8210-class head (2 * 5 * 821) ran with 2-lane vectors: its constant weight
    is padded to whole vectors inside the repacking (done at compile time), the output
    written only where real."""
    func = _dense(m, 24, n)
    sch = Matmul().apply(func, AVX512, False)
    assert sch is not None
    script = sch.mod["main"].script()
    assert "layout_rewrite_preproc" in script
    packed = re.search(
        r"_pad_global = T.sblock_alloc_buffer\(\(T.int64\((\d+)\).*T.int64\((\d+)\)\)\)", script
    )
    assert packed, "the constant weight is padded inside its repacking"
    blocks, nr = int(packed[1]), int(packed[2])
    assert nr % 16 == 0 and blocks * nr >= n > (blocks - 1) * nr, "padded to whole vectors"
    assert "T.vectorized(T.int64(16))" in script
    assert_schedule_matches(func, sch, AVX512)
