"""ResizeAsMatmul: linear NCHW resizes as two matmuls, same numbers as TVM's own resize."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvmflow.resize_matmul import MAX_SIDE, ResizeAsMatmul, interpolation_matrix


def _resize_module(shape: tuple[int, ...], size: tuple[int, int], **attrs: str) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.image.resize2d(x, size, **attrs))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def _ops(mod: tvm.IRModule) -> list[str]:
    text = str(mod["main"])
    return [op for op in ("resize2d", "matmul") if op in text]


@pytest.mark.parametrize(
    "mode", ["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"]
)
@pytest.mark.parametrize(("hw", "size"), [((8, 8), (32, 32)), ((7, 9), (13, 5))])
def test_linear_resize_as_matmuls_matches_tvm(mode, hw, size):
    mod = _resize_module((2, 3, *hw), size, method="linear", coordinate_transformation_mode=mode)
    rewritten = ResizeAsMatmul()(mod)
    assert _ops(rewritten) == ["matmul"]
    x = np.random.default_rng(0).standard_normal((2, 3, *hw)).astype("float32")
    np.testing.assert_allclose(_run(rewritten, x), _run(mod, x), atol=1e-5)


def test_same_size_half_pixel_resize_is_dropped():
    """SegFormer resizes its first map to its own size: the identity, no kernel at all."""
    mod = _resize_module((1, 4, 16, 16), (16, 16), method="linear")
    rewritten = ResizeAsMatmul()(mod)
    assert _ops(rewritten) == []
    x = np.random.default_rng(1).standard_normal((1, 4, 16, 16)).astype("float32")
    np.testing.assert_array_equal(_run(rewritten, x), x)


def test_rows_of_the_matrix_are_convex_weights():
    for mode in ("half_pixel", "align_corners", "asymmetric"):
        r = interpolation_matrix(10, 23, mode)
        assert r.shape == (23, 10)
        np.testing.assert_allclose(r.sum(axis=1), 1, rtol=1e-6)
        assert (r >= 0).all() and ((r > 0).sum(axis=1) <= 2).all()


@pytest.mark.parametrize(
    ("shape", "size", "attrs"),
    [
        ((1, 2, MAX_SIDE + 1, 8), (2 * MAX_SIDE, 16), {"method": "linear"}),  # large map
        ((1, 2, 8, 8), (16, 16), {"method": "nearest_neighbor"}),
        ((1, 2, 8, 8), (16, 16), {"method": "cubic"}),
        ((1, 8, 8, 2), (16, 16), {"method": "linear", "layout": "NHWC"}),
    ],
)
def test_other_resizes_are_left_alone(shape, size, attrs):
    mod = _resize_module(shape, size, **attrs)
    assert _ops(ResizeAsMatmul()(mod)) == ["resize2d"]
