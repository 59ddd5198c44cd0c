"""The accuracy reference computes integer matmuls/convs exactly on every x86 CPU
(tvmflow.accuracy.unsigned_integer_weights): onnxruntime's uint8 x int8 kernels saturate
without VNNI, and a saturated reference rejected correct int8 artifacts on AVX2 hosts."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tvmflow.accuracy import onnxruntime_outputs, unsigned_integer_weights

RNG = np.random.default_rng(3)


def _matmul_integer(b_zp: np.ndarray | None) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """Full-range uint8 x int8 MatMulInteger: pairs of products reach 2 * 255 * 128."""
    a = RNG.integers(0, 255, (4, 64), endpoint=True).astype(np.uint8)
    b = RNG.integers(-128, 127, (64, 16), endpoint=True).astype(np.int8)
    inits = [numpy_helper.from_array(b, "b")]
    inputs = ["a", "b"]
    if b_zp is not None:
        inits.append(numpy_helper.from_array(b_zp, "b_zp"))
        inputs += ["", "b_zp"]
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", inputs, ["y"])],
        "mmi",
        [helper.make_tensor_value_info("a", onnx.TensorProto.UINT8, a.shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.INT32, (4, 16))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    zp = np.zeros((), np.int32) if b_zp is None else b_zp.astype(np.int32)
    return model, a, a.astype(np.int32) @ (b.astype(np.int32) - zp)


@pytest.mark.parametrize("b_zp", [None, np.int8(-3), np.arange(-8, 8, dtype=np.int8)])
def test_the_reference_is_the_exact_integer_product(
    b_zp: np.ndarray | None, tmp_path: Path
) -> None:
    model, a, exact = _matmul_integer(None if b_zp is None else np.asarray(b_zp))
    onnx.save(model, tmp_path / "m.onnx")
    [got] = onnxruntime_outputs(tmp_path / "m.onnx", {"a": a}).values()
    np.testing.assert_array_equal(got, exact)


def test_int8_activations_and_computed_weights_are_left_as_written() -> None:
    """int8 x int8 does not saturate, and a weight that is not a constant cannot be shifted."""
    model, _, _ = _matmul_integer(None)
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT8
    assert not unsigned_integer_weights(model)
    model, _, _ = _matmul_integer(None)
    model.graph.input.append(helper.make_tensor_value_info("w", onnx.TensorProto.INT8, (64, 16)))
    model.graph.node[0].input[1] = "w"
    assert not unsigned_integer_weights(model)


def test_the_rewritten_weight_replaces_the_int8_one() -> None:
    model, _, _ = _matmul_integer(np.asarray(5, np.int8))
    assert unsigned_integer_weights(model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert sorted(inits) == ["y__unsigned_w", "y__unsigned_zp"]  # no unused int8 originals
    assert inits["y__unsigned_w"].dtype == np.uint8
    assert int(inits["y__unsigned_zp"]) == 133


QEMU = shutil.which("qemu-x86_64-static")


@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64-static (qemu-user-static) is missing")
def test_a_cpu_without_vnni_gets_the_same_reference(tmp_path: Path) -> None:
    """onnxruntime under an emulated Haswell (AVX2, no VNNI): the raw model saturates, the
    reference does not."""
    assert QEMU is not None
    model, a, exact = _matmul_integer(np.zeros((), np.int8))
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "a.npy", a)
    script = (
        "import sys, pickle, numpy as np, onnxruntime as ort\n"
        "from pathlib import Path\n"
        "from tvmflow.accuracy import onnxruntime_outputs\n"
        "d = Path(sys.argv[1]); a = np.load(d / 'a.npy')\n"
        "raw = ort.InferenceSession(str(d / 'm.onnx')).run(None, {'a': a})[0]\n"
        "ref = onnxruntime_outputs(d / 'm.onnx', {'a': a})['y']\n"
        "pickle.dump((raw, ref), open(d / 'out.pkl', 'wb'))\n"
    )
    subprocess.run(
        [QEMU, "-cpu", "Haswell", sys.executable, "-c", script, str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=Path(__file__).parents[1],
        timeout=600,
    )
    raw, ref = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert np.abs(raw.astype(np.int64) - exact).max() > 0  # the saturation this guards against
    np.testing.assert_array_equal(ref, exact)
