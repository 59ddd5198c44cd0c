"""`CompiledModel.run`'s per-call paths: arrays passed in place or copied into a per-thread
buffer, whatever their memory looks like, and outputs the caller owns."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tvmflow
from tvmflow import runtime
from tvmflow.accuracy import onnxruntime_outputs
from tvmflow.compile import Artifact, CompileOptions, compile_model
from tvmflow.frontend import load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.targets import resolve_preset


def _placed(array: np.ndarray, offset: int) -> np.ndarray:
    """A C-contiguous copy whose data starts `offset` bytes past a 64-byte boundary."""
    raw = np.empty(array.nbytes + 128, np.uint8)
    start = (64 - raw.ctypes.data % 64) % 64 + offset
    out = raw[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    assert out.ctypes.data % 64 == offset
    return out


def _aligned(array: np.ndarray) -> np.ndarray:
    return _placed(array, 0)


def _unaligned(array: np.ndarray) -> np.ndarray:
    return _placed(array, 4)


def _read_only(array: np.ndarray) -> np.ndarray:
    out = _aligned(array)
    out.flags.writeable = False
    return out


def _strided(array: np.ndarray) -> np.ndarray:
    """The same values, every other element of a twice-as-long last axis."""
    wide = np.zeros((*array.shape[:-1], array.shape[-1] * 2), array.dtype)
    wide[..., ::2] = array
    return wide[..., ::2]


def _fortran(array: np.ndarray) -> np.ndarray:
    return np.asfortranarray(array)


def _big_endian(array: np.ndarray) -> np.ndarray:
    return array.astype(array.dtype.newbyteorder(">"))


LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "aligned": _aligned,
    "unaligned": _unaligned,
    "read-only": _read_only,
    "strided": _strided,
    "fortran": _fortran,
    "big-endian": _big_endian,
}


@pytest.mark.parametrize("in_place_from", [0, runtime.ZERO_COPY_BYTES], ids=["all", "big"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_memory_layout_gives_the_same_outputs(
    artifacts: dict[str, Artifact],
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
    in_place_from: int,
) -> None:
    """In place (threshold 0: every fitting array) or copied, the numbers are those of fresh
    device tensors (`device_inputs`, the path that copies everything)."""
    monkeypatch.setattr(runtime, "ZERO_COPY_BYTES", in_place_from)
    model = tvmflow.load(artifacts["resnet_block"].directory)
    feeds = random_inputs(model.inputs, seed=7)
    reference = runtime.to_numpy(model.run_on_device(model.device_inputs(feeds)))
    given = {k: LAYOUTS[layout](v) for k, v in feeds.items()}
    kept = {k: v.copy() for k, v in given.items()}
    for _ in range(2):  # the second call reuses this thread's buffers
        np.testing.assert_array_equal(model.run(given)["probs"], reference)
    for name, array in given.items():  # read, never written
        np.testing.assert_array_equal(array, kept[name])


def test_outputs_are_owned_copies(artifacts: dict[str, Artifact]) -> None:
    """The VM's memory is reused by the next call: a returned array must not be a view of it."""
    model = tvmflow.load(artifacts["mlp"].directory)
    first = model.run({"x": np.ones((4, 64), np.float32)})
    kept = {k: v.copy() for k, v in first.items()}
    second = model.run({"x": np.full((4, 64), -2.0, np.float32)})
    for name, array in first.items():
        assert array.flags.owndata and array.flags.writeable
        np.testing.assert_array_equal(array, kept[name])
        assert not np.array_equal(array, second[name])


def test_a_wrong_array_after_a_good_call_is_still_refused(artifacts: dict[str, Artifact]) -> None:
    model = tvmflow.load(artifacts["mlp"].directory)
    model.run({"x": np.ones((4, 64), np.float32)})
    for bad in (np.ones((4, 64), np.float64), np.ones((4, 63), np.float32)):
        with pytest.raises(tvmflow.TvmflowError, match="expected x: float32\\[4,64\\]"):
            model.run({"x": bad})
    with pytest.raises(tvmflow.TvmflowError, match="missing x; unknown y"):
        model.run({"y": np.ones((4, 64), np.float32)})


def mixed_dtypes_model(path: Path) -> Path:
    """Where(mask, x, -x) * scale + float(step): bool, float16, float32 and int64 (rank 0)
    inputs; a float16 and a bool output."""
    graph = helper.make_graph(
        [
            helper.make_node("Neg", ["x"], ["neg"]),
            helper.make_node("Where", ["mask", "x", "neg"], ["picked"]),
            helper.make_node("Cast", ["picked"], ["picked32"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["picked32", "scale"], ["scaled"]),
            helper.make_node("Cast", ["step"], ["stepf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["scaled", "stepf"], ["sum"]),
            helper.make_node("Cast", ["sum"], ["y"], to=TensorProto.FLOAT16),
            helper.make_node("Not", ["mask"], ["flipped"]),
        ],
        "mixed",
        [
            helper.make_tensor_value_info("mask", TensorProto.BOOL, [3, 40]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT16, [3, 40]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("step", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3, 40]),
            helper.make_tensor_value_info("flipped", TensorProto.BOOL, [3, 40]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("in_place_from", [0, runtime.ZERO_COPY_BYTES], ids=["all", "big"])
def test_bool_float16_and_scalar_inputs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, in_place_from: int
) -> None:
    monkeypatch.setattr(runtime, "ZERO_COPY_BYTES", in_place_from)
    directory = tmp_path_factory.getbasetemp() / "mixed-dtypes"
    onnx_path = directory / "mixed.onnx"
    if not onnx_path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        mixed_dtypes_model(onnx_path)
        preset = resolve_preset("x86")
        compile_model(load_onnx(onnx_path), preset, directory / "art", CompileOptions())
    model = tvmflow.load(directory / "art")
    feeds = random_inputs(model.inputs, seed=3)
    expected = onnxruntime_outputs(onnx_path, feeds)
    for layout in (_aligned, _unaligned, _big_endian):
        given = {k: layout(v) if v.ndim and v.dtype != np.bool_ else v for k, v in feeds.items()}
        actual = model.run(given)
        assert actual["y"].dtype == np.float16 and actual["flipped"].dtype == np.bool_
        np.testing.assert_array_equal(actual["flipped"], expected["flipped"])
        np.testing.assert_allclose(actual["y"], expected["y"], rtol=1e-3, atol=1e-3)


def test_call_overhead_script_times_all_three(
    artifacts: dict[str, Artifact], zoo_dir: Path, tmp_path: Path
) -> None:
    """scripts/call_overhead.py on an artifact and its ONNX file: µs per call of run(), the
    VM call alone and onnxruntime, as JSON."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "call_overhead.py"
    pair = f"{artifacts['mlp'].directory}={zoo_dir / 'mlp.onnx'}"
    out = tmp_path / "times.json"
    argv = ["--artifact", pair, "--rounds", "1", "--round-s", "0.02", "--json", str(out)]
    proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text()).values()
    assert set(row) == {"run", "vm", "onnxruntime"}
    assert all(0 < us < 1e6 for us in row.values()), row
    assert "run/VM" in proc.stdout
