"""Int8Conv2d: tvmflow.qdq's qconv2d kernels (pack, u8 x i8 conv, requantize) tensorized
with VNNI vpdpbusd; the default schedule is bit-exact against integer arithmetic in numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tvm

from tests.kernels import assert_schedule_matches
from tvmflow.qdq import RANGES, ConvSpec, conv_kernel, conv_operands, pack_conv_weight
from tvmflow.schedules.cpu_int8_conv2d import Int8Conv2d, register_tile
from tvmflow.targets import host_cpu_features, resolve_preset

VNNI = tvm.target.Target(resolve_preset("x86-avx512-vnni").target)
AVX512 = tvm.target.Target(resolve_preset("x86-avx512").target)
needs_vnni = pytest.mark.skipif(
    "avx512_vnni" not in host_cpu_features(), reason="this host has no AVX512-VNNI"
)


def reference(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray, scale: np.ndarray, spec: ConvSpec
) -> np.ndarray:
    """ONNX QLinearConv as onnxruntime computes it, in numpy: int64 sums of (x - zx) * w
    (padding contributes zx - zx = 0, grouped per `w`'s input channels), then
    round-half-even(float32(acc + bias) * scale) + zy, saturated; NHWC."""
    xn = x if spec.in_layout == "NCHW" else x.transpose(0, 3, 1, 2)
    top, left, bottom, right = spec.padding
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    centered = xn.astype(np.int64) - spec.zx
    padded = np.pad(centered, [(0, 0), (0, 0), (top, bottom), (left, right)])
    n, oh, ow, o = spec.out_shape
    groups = xn.shape[1] // w.shape[1]
    acc = np.zeros((n, o, oh, ow), np.int64)
    for ky in range(w.shape[2]):
        for kx in range(w.shape[3]):
            window = padded[
                :, :, ky * dh : ky * dh + sh * oh : sh, kx * dw : kx * dw + sw * ow : sw
            ]
            taps = w[:, :, ky, kx].astype(np.int64)
            if groups == 1:
                acc += np.einsum("nchw,oc->nohw", window, taps)
            else:  # depthwise
                acc += window * taps[None, :, 0, None, None]
    total = (acc + bias[None, :, None, None]).astype(np.int32).astype(np.float32)
    y = np.rint(total * scale[None, :, None, None]) + np.float32(spec.zy)
    return np.clip(y, spec.low, spec.high).astype(spec.out_dtype).transpose(0, 2, 3, 1)


CASES = {
    # name: (x shape NCHW, x dtype, layout, out channels, kernel, stride, pad, dilation, relu)
    "3x3": ((1, 16, 12, 12), "uint8", "NCHW", 32, 3, 1, 1, 1, False),
    "stem_7x7_c3_s2": ((1, 3, 20, 20), "uint8", "NCHW", 16, 7, 2, 3, 1, True),
    "1x1_int8_nhwc": ((2, 20, 6, 6), "int8", "NHWC", 48, 1, 1, 0, 1, False),
    "3x3_dilated_o24": ((1, 8, 9, 9), "uint8", "NHWC", 24, 3, 1, 2, 2, True),
    # no pack pass: the conv reads the NHWC input itself
    "1x1_nhwc_direct": ((1, 32, 7, 7), "uint8", "NHWC", 32, 1, 1, 0, 1, False),
    "3x3_s2_nopad_nhwc_direct": ((1, 16, 9, 9), "uint8", "NHWC", 16, 3, 2, 0, 1, False),
}


def make_case(name: str, seed: int = 0) -> tuple[ConvSpec, dict[str, np.ndarray]]:
    shape, dtype, layout, o, k, s, p, d, relu = CASES[name]
    rng = np.random.default_rng(seed)
    n, c, h, w_ = shape
    lo, hi = RANGES[dtype]
    x = rng.integers(lo, hi + 1, shape).astype(dtype)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    weight = rng.integers(-128, 128, (o, c, k, k)).astype(np.int8)
    oh, ow = ((h + 2 * p - d * (k - 1) - 1) // s + 1), ((w_ + 2 * p - d * (k - 1) - 1) // s + 1)
    zy = 9
    spec = ConvSpec(
        in_shape=x.shape,
        in_layout=layout,
        in_dtype=dtype,
        padding=(p, p, p, p),
        strides=(s, s),
        dilation=(d, d),
        out_shape=(n, oh, ow, o),
        zx=int(rng.integers(lo, hi + 1)),
        zy=zy,
        low=zy if relu else 0,
        high=255,
        out_dtype="uint8",
    )
    data = {
        "x": x,
        "w": weight,
        "bias": rng.integers(-5000, 5000, o).astype(np.int32),
        "scale": rng.uniform(1e-4, 2e-3, o).astype(np.float32),
    }
    return spec, data


def scheduled(spec: ConvSpec, data: dict[str, np.ndarray]) -> tuple[Any, Any, list[np.ndarray]]:
    packed, offset = conv_operands(data["w"], data["bias"], spec.zx, spec.in_dtype, False)
    func = conv_kernel(spec, packed, depthwise=False)
    with VNNI:
        sch = Int8Conv2d().apply(func, VNNI, False)
    return func, sch, [data["x"], packed, offset, data["scale"]]


def run(sch: Any, args: list[np.ndarray], spec: ConvSpec) -> np.ndarray:
    func = sch.mod["main"].with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": func}), target=VNNI)
    out = tvm.runtime.empty(spec.out_shape, spec.out_dtype)
    lib["main"](*[tvm.runtime.tensor(a) for a in args], out)
    return out.numpy()


def test_weight_packing_is_16_outputs_by_4_inputs_zero_filled():
    w = np.random.default_rng(0).integers(-128, 128, (20, 6, 3, 3)).astype(np.int8)
    packed = pack_conv_weight(w)
    assert packed.shape == (2, 3, 3, 2, 16, 4)
    assert packed[1, 2, 0, 1, 3, 1] == w[16 + 3, 4 + 1, 2, 0]
    assert not packed[1, :, :, :, 4:].any() and not packed[:, :, :, 1, :, 2:].any()


def test_register_tile_divides_the_output_and_fits_the_registers():
    assert register_tile(56, 4) == (8, 2)
    assert register_tile(7, 8) == (7, 2)
    assert register_tile(13, 3) == (1, 3)
    for cols, vecs in (register_tile(c, v) for c in (7, 14, 28, 56, 112) for v in (1, 2, 4)):
        assert cols * vecs <= 24


def test_claims_only_qconv2d_kernels_on_vnni_targets():
    spec, data = make_case("3x3")
    func, sch, _ = scheduled(spec, data)
    assert sch is not None
    assert "llvm.x86.avx512.vpdpbusd.512" in sch.mod["main"].script()
    with AVX512:
        assert Int8Conv2d().apply(func, AVX512, False) is None
    other = tvm.tirx.PrimFunc([], tvm.tirx.Evaluate(0))
    with VNNI:
        assert Int8Conv2d().apply(other, VNNI, False) is None


@needs_vnni
@pytest.mark.parametrize("name", sorted(CASES))
def test_default_schedule_is_bit_exact(name: str):
    """Stride, dilation, 3 input channels (one zero-filled lane), int8 activations shifted
    to uint8, NCHW or NHWC input, 24 output channels (a padded vector), a Relu bound."""
    spec, data = make_case(name)
    func, sch, args = scheduled(spec, data)
    assert sch is not None
    assert_schedule_matches(func, sch, VNNI)  # the compile-time kernel check
    assert ("qconv_pack" in sch.mod["main"].script()) != name.endswith("_direct")
    expected = reference(data["x"], data["w"], data["bias"], data["scale"], spec)
    np.testing.assert_array_equal(run(sch, args, spec), expected)
