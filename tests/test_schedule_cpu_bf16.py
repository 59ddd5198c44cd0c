"""--precision bf16: the Bf16Compute pass, the Bf16Gemm rule (vdpbf16ps), compile and refusals.

Kernels that run need a host with AVX512_BF16 (skipped elsewhere); scheduling, LLVM codegen
(the instruction is in the object code) and the refusals run on any x86 host.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tvm
from tvm import relax

from tests.kernels import (
    assert_schedule_matches,
    const,
    fused_kernels,
    graph_module,
    loop_kinds,
)
from tvmflow.accuracy import BF16_TOLERANCE, Tolerance, tolerance_for
from tvmflow.cli import main
from tvmflow.lowering import BF16_FEATURE, BF16_PRESET, fuse
from tvmflow.schedules import default_rules
from tvmflow.schedules.cpu_bf16 import Bf16Gemm, Bf16PointwiseConv2d, has_bf16
from tvmflow.targets import builtin_presets, host_cpu_features

BF16 = tvm.target.Target(builtin_presets()[BF16_PRESET].target)
runs_bf16 = pytest.mark.skipif(
    BF16_FEATURE not in host_cpu_features(), reason="this host has no AVX512_BF16"
)


def _kernels(
    inputs: dict[str, tuple[tuple[int, ...], str]], body: Callable[..., relax.Expr]
) -> dict[str, tvm.tirx.PrimFunc]:
    """The kernels of `body` lowered with --precision bf16 for the bf16 preset."""
    mod = fuse(graph_module(inputs, body), BF16, "bf16")
    with BF16:
        mod = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def _conv(c_in: int, c_out: int, size: int, k: int, stride: int) -> Callable[..., Any]:
    def body(x: relax.Expr) -> relax.Expr:
        y = relax.op.nn.conv2d(x, const((c_out, c_in, k, k)), strides=stride, padding=k // 2)
        return relax.op.nn.relu(relax.op.add(y, const((1, c_out, 1, 1), 1)))

    return body


def _bf16_kernel(kernels: dict[str, tvm.tirx.PrimFunc]) -> tvm.tirx.PrimFunc:
    """The one kernel reading bf16 (the conv / matmul; the other is the input's cast)."""
    found = [f for f in kernels.values() if any(str(p.dtype) == "bfloat16" for p in f.params)]
    assert len(found) == 2, sorted(kernels)  # the cast writes bf16, the op reads it
    return next(f for f in found if str(f.params[0].dtype) == "bfloat16")


CONVS = [(32, 32, 16, 3, 1), (64, 128, 14, 1, 2), (16, 48, 15, 3, 2), (64, 16, 7, 5, 1)]


@pytest.mark.parametrize(("c_in", "c_out", "size", "k", "stride"), CONVS)
def test_conv_is_claimed_and_emits_vdpbf16ps(c_in, c_out, size, k, stride):
    func = _bf16_kernel(
        _kernels({"x": ((1, c_in, size, size), "float32")}, _conv(c_in, c_out, size, k, stride))
    )
    sch = Bf16Gemm().apply(func, BF16, False)
    assert sch is not None
    assert {"parallel", "unrolled"} <= loop_kinds(sch)
    prim = sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("global_symbol", "main")
    asm = tvm.compile(tvm.IRModule({"main": prim}), target=BF16).mod.inspect_source("asm")
    assert "vdpbf16ps" in asm


@runs_bf16
@pytest.mark.parametrize(("c_in", "c_out", "size", "k", "stride"), CONVS)
def test_conv_matches_unscheduled(c_in, c_out, size, k, stride):
    func = _bf16_kernel(
        _kernels({"x": ((1, c_in, size, size), "float32")}, _conv(c_in, c_out, size, k, stride))
    )
    sch = Bf16Gemm().apply(func, BF16, False)
    assert sch is not None
    assert_schedule_matches(func, sch, BF16)


@runs_bf16
def test_dense_matches_fp32_numpy_within_bf16_rounding():
    """The scheduled kernel against numpy in fp32 on the same bf16-rounded operands: only the
    summation order differs, so it agrees far inside the bf16 tolerance."""
    import ml_dtypes

    m, k, n = 24, 96, 64
    w = np.random.default_rng(0).standard_normal((k, n)).astype("float32")
    kernels = _kernels({"x": ((m, k), "float32")}, lambda x: relax.op.matmul(x, relax.const(w)))
    func = _bf16_kernel(kernels)
    sch = Bf16Gemm().apply(func, BF16, False)
    assert sch is not None
    x = np.random.default_rng(1).standard_normal((m, k)).astype(ml_dtypes.bfloat16)
    wb = w.astype(ml_dtypes.bfloat16)
    prim = sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": prim}), target=BF16)
    out = tvm.runtime.tensor(np.zeros((m, n), "float32"))
    lib(tvm.runtime.tensor(x), tvm.runtime.tensor(wb), out)
    expected = x.astype("float32") @ wb.astype("float32")
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_default_decisions_tile_and_packing():
    """The tile is pick_tile's for 16-lane vectors in 32 registers, the weight is packed
    [n / tile width, taps.., pair / 2, tile width, 2] and folded out of the kernel."""
    # stride 2: at stride 1 this conv is a Winograd F(4,3) one (see test_winograd_f4_stays_fp32)
    func = _bf16_kernel(_kernels({"x": ((1, 128, 56, 56), "float32")}, _conv(128, 128, 56, 3, 2)))
    sch = Bf16Gemm().apply(func, BF16, False)
    assert sch is not None
    script = sch.mod["main"].script()
    # 28 columns x 128 channels: 4 rows x 4 vectors (16 accumulators + 4 operands + 1)
    assert "(T.int64(2), T.int64(3), T.int64(3), T.int64(64), T.int64(64), T.int64(2))" in script
    assert "layout_rewrite_preproc" in script and "pragma_import_llvm" in script


def test_pass_keeps_fp32_where_the_kernel_cannot_run():
    """Matmul columns / 1x1 conv outputs not a multiple of 16, activation x activation matmuls,
    vector x matrix and
    depthwise convs stay fp32 (bf16 without the kernel is slower), and so do 1x1 convs over
    a large plane with an odd channel count (the fp32 PointwiseConv2d rule runs them faster).
    Depthwise inputs stay fp32: read in bf16 they took MobileNetV2 at batch 8 past the bf16
    tolerance (max abs err 0.36 against 0.27, allowed 0.35)."""
    Inputs = dict[str, tuple[tuple[int, ...], str]]
    cases: dict[str, tuple[Inputs, Callable[..., Any]]] = {
        "10 columns": ({"x": ((4, 32), "float32")}, lambda x: relax.op.matmul(x, const((32, 10)))),
        "attention": (
            {"q": ((4, 32), "float32"), "k": ((32, 16), "float32")},
            lambda q, k: relax.op.matmul(q, k),
        ),
        "gemv": ({"v": ((32,), "float32")}, lambda v: relax.op.matmul(v, const((32, 16)))),
        "odd 1x1 over 56x56": ({"x": ((1, 15, 56, 56), "float32")}, _conv(15, 96, 56, 1, 1)),
        # 1x1 -> 24: MobileNetV2's projections in bf16 took its error to 98% of the tolerance
        "1x1 to 24 channels": ({"x": ((1, 32, 56, 56), "float32")}, _conv(32, 24, 56, 1, 1)),
        "depthwise": (
            {"x": ((1, 32, 8, 8), "float32")},
            lambda x: relax.op.nn.conv2d(x, const((32, 1, 3, 3)), padding=1, groups=32),
        ),
    }
    for name, (inputs, body) in cases.items():
        kernels = _kernels(inputs, body)
        dtypes = {str(p.dtype) for f in kernels.values() for p in f.params}
        assert dtypes == {"float32"}, name


def test_winograd_f4_stays_fp32_and_f2_convs_run_in_bf16():
    """3x3 stride-1 convs that Winograd F(4,3) takes stay fp32 Winograd (it beats the bf16
    kernel); those fp32 would give F(2,3) run in the bf16 kernel instead."""
    f4 = _kernels({"x": ((1, 128, 28, 28), "float32")}, _conv(128, 128, 28, 3, 1))
    assert any(name.startswith("winograd_gemm") for name in f4)
    assert {str(p.dtype) for f in f4.values() for p in f.params} == {"float32"}
    f2 = _kernels({"x": ((1, 256, 14, 14), "float32")}, _conv(256, 256, 14, 3, 1))
    assert not any("winograd" in name for name in f2)
    assert Bf16Gemm().apply(_bf16_kernel(f2), BF16, False) is not None
    fp32 = fused_kernels({"x": ((1, 256, 14, 14), "float32")}, _conv(256, 256, 14, 3, 1), BF16)
    assert any(name.startswith("winograd_gemm") for name in fp32)  # F(2,3) at fp32


@pytest.mark.parametrize(("c_in", "c_out", "size"), [(16, 96, 56), (32, 16, 32)])
def test_pointwise_over_a_large_plane_runs_in_the_planes_kernel(c_in, c_out, size):
    """A 1x1 conv over a plane of whole vectors: vectorized over the plane (whole output
    rows), not over output channels; vdpbf16ps in the object code; same values."""
    func = _bf16_kernel(
        _kernels({"x": ((1, c_in, size, size), "float32")}, _conv(c_in, c_out, size, 1, 1))
    )
    rules = default_rules(BF16)
    claims = next(type(r) for r in rules if r.apply(func, BF16, False) is not None)
    assert claims is Bf16PointwiseConv2d
    sch = Bf16PointwiseConv2d().apply(func, BF16, False)
    assert sch is not None
    prim = sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("global_symbol", "main")
    asm = tvm.compile(tvm.IRModule({"main": prim}), target=BF16).mod.inspect_source("asm")
    assert "vdpbf16ps" in asm
    if BF16_FEATURE in host_cpu_features():
        assert_schedule_matches(func, sch, BF16)


@runs_bf16
def test_rgb_stem_gets_a_zero_channel_and_the_kernel():
    """An odd channel count (3: RGB) is padded to 4 (a zero channel in input and weight):
    dpbf16 multiplies channel pairs."""
    func = _bf16_kernel(_kernels({"x": ((1, 3, 32, 32), "float32")}, _conv(3, 64, 32, 7, 2)))
    assert [int(d) for d in func.params[0].shape] == [1, 4, 32, 32]
    sch = Bf16Gemm().apply(func, BF16, False)
    assert sch is not None
    assert_schedule_matches(func, sch, BF16)


def test_rule_only_on_bf16_targets_and_bf16_kernels():
    fp32 = fused_kernels({"x": ((1, 32, 8, 8), "float32")}, _conv(32, 32, 8, 3, 1), BF16)
    bf16_rules = (Bf16PointwiseConv2d, Bf16Gemm)
    assert fp32 and all(
        r().apply(f, BF16, False) is None for r in bf16_rules for f in fp32.values()
    )
    avx512 = tvm.target.Target(builtin_presets()["x86-avx512"].target)
    assert not has_bf16(avx512) and has_bf16(BF16)
    assert not any(isinstance(r, bf16_rules) for r in default_rules(avx512))
    assert [type(r) for r in default_rules(BF16)[:2]] == list(bf16_rules)


def test_tolerance_floor_is_bf16s():
    assert tolerance_for("bf16", Tolerance()) == BF16_TOLERANCE
    assert tolerance_for("bf16", Tolerance(1.0, 0.5)) == Tolerance(1.0, 0.5)
    assert tolerance_for("fp32", Tolerance()) == Tolerance()


@pytest.mark.parametrize("preset", ["x86-avx512", "x86-avx2", "cuda-sm80"])
def test_refused_on_presets_without_bf16(
    zoo_dir: Path, tmp_path: Path, preset: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["compile", str(zoo_dir / "mlp.onnx"), "-t", preset, "-o", str(out)]
    assert main([*argv, "--input-shape", "x=4,64", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"needs a CPU preset with {BF16_FEATURE}" in err and f"--target {BF16_PRESET}" in err
    assert not out.exists()


@runs_bf16
def test_compile_resnet_block_bf16_verifies(
    zoo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["compile", str(zoo_dir / "resnet_block.onnx"), "-t", BF16_PRESET, "-o", str(out)]
    assert main([*argv, "--input-shape", "image=1,3,64,64", "--precision", "bf16"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy checked: native (bf16: atol 0.02, rtol 0.03)" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "bf16" and manifest["accuracy"]
    assert BF16_FEATURE in manifest["cpu_features"]


def test_qdq_convs_run_int8_kernels_under_bf16(tmp_path: Path) -> None:
    """Every AVX512_BF16 CPU has AVX512-VNNI, so the bf16 preset keeps QDQ convs as int8
    kernels (`tvmflow.qdq`); without VNNI in the preset they ran dequantized in fp32 / bf16
    (resnet18-qdq 2.2x onnxruntime's int8 session)."""
    from tvmflow import zoo
    from tvmflow.frontend import load_onnx
    from tvmflow.lowering import fused_module
    from tvmflow.schedules import kernel_rules

    model = zoo.quantize_qdq(zoo.conv_net(), tmp_path, {"image": (1, 3, 32, 32)})
    mod = fused_module(load_onnx(model, {"image": (1, 3, 32, 32)}), BF16, "bf16")
    with BF16:
        mod = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    rules = list(kernel_rules(mod, BF16).values())
    convs = [n.op_type for n in onnx.load(str(model)).graph.node].count("Conv")
    assert convs and rules.count("Int8Conv2d") == convs


@runs_bf16
def test_conv_output_channels_are_padded_to_vectors():
    """24 output channels (PP-OCR's 96->24 3x3 convs, MobileNetV2's projections at 14x14):
    zero filters up to 32 in bf16 (as `PadConvForTiles` pads fp32 convs), sliced off."""
    kernels = _kernels({"x": ((1, 16, 16, 16), "float32")}, _conv(16, 24, 16, 3, 2))
    func = _bf16_kernel(kernels)
    assert [int(d) for d in func.params[1].shape][-1] == 32  # HWIO weight, padded
    assert [int(d) for d in func.params[-1].shape] == [1, 24, 8, 8]
    sch = Bf16Gemm().apply(func, BF16, False)
    assert sch is not None
    assert_schedule_matches(func, sch, BF16)


@runs_bf16
def test_a_bf16_cast_epilogue_is_vectorized_at_the_fp32_width():
    """An elementwise kernel computing in fp32 and storing bf16 (a pixel shuffle feeding a
    bf16 conv) gets vectors of 16 (its math is fp32): at 32 bf16 lanes its 240-wide rows had
    no whole vector and stayed scalar. Same values as the unscheduled kernel."""
    from tvmflow.schedules.cpu_elementwise import Elementwise

    def body(x: relax.Expr) -> relax.Expr:
        y = relax.op.permute_dims(relax.op.reshape(x, (1, 4, 2, 2, 120, 120)), [0, 1, 4, 2, 5, 3])
        y = relax.op.nn.relu(relax.op.add(relax.op.reshape(y, (1, 4, 240, 240)), const((4, 1, 1))))
        return relax.op.astype(y, "bfloat16")

    kernels = fused_kernels({"x": ((1, 16, 120, 120), "float32")}, body, BF16)
    (func,) = kernels.values()
    sch = Elementwise().apply(func, BF16, False)
    assert sch is not None and "vectorized" in loop_kinds(sch)
    assert_schedule_matches(func, sch, BF16)
