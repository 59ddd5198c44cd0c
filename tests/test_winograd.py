"""tvmflow.winograd (3x3 stride-1 conv2d as F(m, 3)) and its three rules (cpu_winograd)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax, s_tir
from tvm_ffi import structural_equal

from tests.kernels import (
    AVX2,
    NEON,
    TARGET,
    assert_schedule_matches,
    const,
    fused_kernels,
    fused_module,
    loop_kinds,
    lowers_for,
)
from tvmflow import winograd
from tvmflow.schedules import design_spaces, kernel_rules
from tvmflow.schedules.cpu_winograd import WinogradDataPack, WinogradGemm, WinogradInverse


def _conv_body(cin: int, cout: int, pad: int | tuple[int, ...] = 1, residual: bool = False):
    def body(x: relax.Expr) -> relax.Expr:
        y = relax.op.nn.conv2d(x, const((cout, cin, 3, 3)), padding=pad)
        y = relax.op.add(y, const((1, cout, 1, 1), 1))
        if residual:
            y = relax.op.add(y, x)
        return relax.op.nn.relu(y)

    return body


def _kernels(cin=32, cout=48, hw=(20, 20), batch=1, **kw) -> dict[str, tvm.tirx.PrimFunc]:
    return fused_kernels({"x": ((batch, cin, *hw), "float32")}, _conv_body(cin, cout, **kw))


def _by_prefix(kernels: dict[str, tvm.tirx.PrimFunc], prefix: str) -> tvm.tirx.PrimFunc:
    (func,) = [f for name, f in kernels.items() if name.startswith(prefix)]
    return func


def _winograd_conv_numpy(x: np.ndarray, w: np.ndarray, m: int) -> np.ndarray:
    """The F(m, 3) algorithm in float64 numpy (pad 1): what the three kernels compute."""
    a, b, _ = winograd.matrices(m)
    alpha = m + 2
    n, c, h, wd = x.shape
    conv = winograd.WinogradConv(n, c, h, wd, w.shape[0], (1, 1, 1, 1), m)
    rows, cols = conv.tiles_h * m + 2, conv.tiles_w * m + 2
    xp = np.zeros((n, c, rows, cols))
    xp[:, :, 1 : h + 1, 1 : wd + 1] = x
    u = winograd.transform_weight(w, m).astype(np.float64).reshape(alpha, alpha, c, -1)
    y = np.zeros((n, w.shape[0], conv.tiles_h * m, conv.tiles_w * m))
    for th in range(conv.tiles_h):
        for tw in range(conv.tiles_w):
            d = xp[:, :, th * m : th * m + alpha, tw * m : tw * m + alpha]
            v = np.einsum("ra,ncrs,sb->abnc", b, d, b)
            mm = np.einsum("abnc,abck->abnk", v, u)
            y[:, :, th * m : th * m + m, tw * m : tw * m + m] = np.einsum(
                "ai,abnk,bj->nkij", a, mm, a
            )
    return y[:, :, :h, :wd]


@pytest.mark.parametrize("m", [2, 4, 6])
def test_transforms_compute_the_convolution(m: int) -> None:
    """A, B, G of F(m, 3) and the weight transform reproduce a direct 3x3 conv."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 9, 7))
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    direct = np.zeros((1, 5, 9, 7))
    for r in range(3):
        for s in range(3):
            direct += np.einsum("nchw,kc->nkhw", xp[:, :, r : r + 9, s : s + 7], w[:, :, r, s])
    np.testing.assert_allclose(_winograd_conv_numpy(x, w, m), direct, rtol=1e-5, atol=1e-5)


def test_pass_replaces_the_conv_and_its_weight() -> None:
    """Three kernels instead of the conv; the bias and relu fuse into the output transform;
    the weight constant left is the transformed one only."""
    mod = fused_module({"x": ((1, 32, 20, 20), "float32")}, _conv_body(32, 48))
    names = sorted(
        gv.name_hint.rstrip("0123456789")
        for gv, f in mod.functions_items()
        if isinstance(f, tvm.tirx.PrimFunc)
    )
    assert names == ["fused_winograd_inverse_add_relu", "winograd_data_pack", "winograd_gemm"]
    shapes: list[tuple[int, ...]] = []

    def visit(const: tvm.ir.expr.Constant) -> None:
        shapes.append(tuple(getattr(const.value, "shape", ())))

    tvm_ffi.structural_walk(mod["main"].body, [(tvm.ir.expr.Constant, visit)], order="pre")
    assert (36, 32, 48) in shapes
    assert (48, 32, 3, 3) not in shapes and (3, 3, 32, 48) not in shapes


@pytest.mark.parametrize(
    "shape",
    [
        dict(cin=16, cout=48),  # too few input channels
        dict(hw=(9, 9)),  # 9 F(4,3) tiles: too small a map for 32 channels
    ],
)
def test_small_convs_stay_direct(shape: dict) -> None:
    assert not any("winograd" in name for name in _kernels(**shape))


def test_strided_convs_stay_direct() -> None:
    def body(x: relax.Expr) -> relax.Expr:
        return relax.op.nn.conv2d(x, const((32, 32, 3, 3)), strides=2, padding=1)

    kernels = fused_kernels({"x": ((1, 32, 32, 32), "float32")}, body)
    assert not any("winograd" in name for name in kernels)


CASES: dict[str, dict[str, Any]] = {
    "F4, 32->48 20x20": dict(),
    "F2, odd map 15x10 pad 0": dict(cin=128, cout=128, hw=(15, 10), pad=0),
    "batch 2, residual, 17x23": dict(cin=32, cout=32, hw=(17, 23), batch=2, residual=True),
    "asymmetric pad": dict(hw=(21, 19), pad=(0, 1, 2, 1)),
    "96->24, U padded to 32 channels": dict(cin=96, cout=24, hw=(20, 20)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rules_claim_their_kernels_and_match_the_reference(case: str) -> None:
    kernels = _kernels(**CASES[case])
    claimed = kernel_rules(tvm.IRModule(kernels), TARGET)
    assert sorted(r for r in claimed.values() if r and r.startswith("Winograd")) == [
        "WinogradDataPack",
        "WinogradGemm",
        "WinogradInverse",
    ]
    for rule, prefix in (
        (WinogradDataPack(), "winograd_data_pack"),
        (WinogradGemm(), "winograd_gemm"),
        (WinogradInverse(), "fused_winograd_inverse"),
    ):
        func = _by_prefix(kernels, prefix)
        with TARGET:
            sch = rule.apply(func, TARGET, False)
        assert sch is not None, prefix
        assert {"parallel", "vectorized"} <= loop_kinds(sch)
        assert_schedule_matches(func, sch)


def test_rules_leave_other_kernels_alone() -> None:
    def body(x: relax.Expr) -> relax.Expr:
        return relax.op.nn.relu(relax.op.nn.conv2d(x, const((32, 32, 3, 3)), strides=2))

    (func,) = fused_kernels({"x": ((1, 32, 17, 17), "float32")}, body).values()
    with TARGET:
        for rule in (WinogradDataPack(), WinogradGemm(), WinogradInverse()):
            assert rule.apply(func, TARGET, False) is None


def test_gemm_prepacks_the_transformed_weight_and_lowers_for_avx2_and_neon() -> None:
    kernels = _kernels()
    func = _by_prefix(kernels, "winograd_gemm")
    with TARGET:
        sch = WinogradGemm().apply(func, TARGET, False)
    assert sch is not None
    assert "layout_rewrite_preproc" in sch.mod["main"].script()
    for target in (AVX2, NEON):
        with target:
            for rule, prefix in (
                (WinogradDataPack(), "winograd_data_pack"),
                (WinogradGemm(), "winograd_gemm"),
                (WinogradInverse(), "fused_winograd_inverse"),
            ):
                other = rule.apply(_by_prefix(kernels, prefix), target, False)
                assert other is not None
                lowers_for(other, target)


def test_gemm_default_decisions_reproduce_the_rule_schedule() -> None:
    func = _by_prefix(_kernels(cin=64, cout=64, hw=(24, 24)), "winograd_gemm")
    spaces = design_spaces(func, TARGET)
    assert len(spaces) >= 2
    with TARGET:
        default = WinogradGemm().apply(func, TARGET, False)
    assert default is not None
    first = spaces[0]
    assert first.trace is not None
    assert any(i.kind.name == "SamplePerfectTile" for i in first.trace.insts)
    assert structural_equal(first.mod, default.mod)
    for i, space in enumerate(spaces):
        sch = s_tir.Schedule(tvm.IRModule({"main": func}), seed=3 + i)
        assert space.trace is not None
        s_tir.Trace(space.trace.insts, {}).apply_to_schedule(sch, remove_postproc=False)
        assert_schedule_matches(func, sch)


def test_choose_tile_follows_the_measured_rule() -> None:
    conv = winograd.WinogradConv(1, 64, 56, 56, 64, (1, 1, 1, 1), 4)
    assert winograd.choose_tile(conv) == 4
    assert winograd.choose_tile(replace(conv, c=16, k=16)) is None
    assert winograd.choose_tile(replace(conv, c=96, k=24, h=60, w=60)) == 4  # PP-OCR neck
    assert winograd.choose_tile(replace(conv, c=16, k=48)) is None  # harmonic mean 24
    assert winograd.choose_tile(replace(conv, h=14, w=14)) is None  # 16 F(4,3) tiles only
    wide = replace(conv, c=256, k=256, h=14, w=14)
    assert winograd.choose_tile(wide) == 2
    assert winograd.choose_tile(replace(wide, c=128, k=128, n=8)) == 4  # batch: reuse
    assert winograd.choose_tile(replace(wide, n=8)) == 2  # F(4,3)'s U: 9.4 MB
    assert winograd.choose_tile(replace(wide, h=7, w=7)) is None  # weight-bound
    big = replace(wide, c=512, k=512, n=8, h=7, w=7)
    assert winograd.choose_tile(big) is None  # even F(2,3)'s U: 16.8 MB
    neck = replace(conv, c=96, k=24, h=120, w=120)
    assert winograd.choose_tile(neck) == 4
    assert winograd.choose_tile(replace(neck, n=8)) is None  # V: 100 MB
