"""Int8DepthwiseConv2d: tvmflow.qdq's qdwconv2d kernels (pack, i32 depthwise multiply-adds,
requantize) vectorized over 16 channels; the default schedule is bit-exact against integer
arithmetic in numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tvm

from tests.kernels import assert_schedule_matches, loop_kinds
from tests.test_int8_conv2d import AVX512, VNNI, needs_vnni, reference, run
from tvmflow.qdq import RANGES, ConvSpec, conv_kernel, conv_operands
from tvmflow.schedules.cpu_int8_depthwise_conv2d import Int8DepthwiseConv2d

CASES = {
    # name: (x shape NCHW, x dtype, layout, kernel, stride, pad, relu)
    "3x3_s1_nhwc": ((1, 32, 10, 10), "uint8", "NHWC", 3, 1, 1, True),
    "3x3_s2_nchw": ((1, 48, 11, 11), "uint8", "NCHW", 3, 2, 1, False),
    "5x5_int8": ((2, 16, 9, 9), "int8", "NHWC", 5, 1, 2, False),
}


def make_case(name: str, seed: int = 0) -> tuple[ConvSpec, dict[str, np.ndarray]]:
    shape, dtype, layout, k, s, p, relu = CASES[name]
    rng = np.random.default_rng(seed)
    n, c, h, w_ = shape
    lo, hi = RANGES[dtype]
    x = rng.integers(lo, hi + 1, shape).astype(dtype)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = (h + 2 * p - k) // s + 1, (w_ + 2 * p - k) // s + 1
    zy = 4
    spec = ConvSpec(
        in_shape=x.shape,
        in_layout=layout,
        in_dtype=dtype,
        padding=(p, p, p, p),
        strides=(s, s),
        dilation=(1, 1),
        out_shape=(n, *out, c),
        zx=int(rng.integers(lo, hi + 1)),
        zy=zy,
        low=zy if relu else 0,
        high=255,
        out_dtype="uint8",
    )
    data = {
        "x": x,
        "w": rng.integers(-128, 128, (c, 1, k, k)).astype(np.int8),
        "bias": rng.integers(-3000, 3000, c).astype(np.int32),
        "scale": rng.uniform(1e-3, 1e-2, c).astype(np.float32),
    }
    return spec, data


def scheduled(spec: ConvSpec, data: dict[str, np.ndarray]) -> tuple[Any, Any, list[np.ndarray]]:
    packed, offset = conv_operands(data["w"], data["bias"], spec.zx, spec.in_dtype, True)
    func = conv_kernel(spec, packed, depthwise=True)
    with VNNI:
        sch = Int8DepthwiseConv2d().apply(func, VNNI, False)
    return func, sch, [data["x"], packed, offset, data["scale"]]


def test_claims_only_qdwconv2d_kernels_on_vnni_targets():
    spec, data = make_case("3x3_s1_nhwc")
    func, sch, _ = scheduled(spec, data)
    assert sch is not None and {"parallel", "vectorized", "unrolled"} <= loop_kinds(sch)
    with AVX512:
        assert Int8DepthwiseConv2d().apply(func, AVX512, False) is None
    other = tvm.tirx.PrimFunc([], tvm.tirx.Evaluate(0))
    with VNNI:
        assert Int8DepthwiseConv2d().apply(other, VNNI, False) is None


@needs_vnni
@pytest.mark.parametrize("name", sorted(CASES))
def test_default_schedule_is_bit_exact(name: str):
    spec, data = make_case(name)
    func, sch, args = scheduled(spec, data)
    assert sch is not None
    assert_schedule_matches(func, sch, VNNI)
    expected = reference(data["x"], data["w"], data["bias"], data["scale"], spec)
    np.testing.assert_array_equal(run(sch, args, spec), expected)
