"""`CompiledModel.run`'s per-call paths: arrays passed in place or copied into a per-thread
buffer, whatever their memory looks like, and outputs the caller owns."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def state_model(path: Path) -> Path:
    """state' = state * 0.5 + x: a recurrent state of 256 KiB, as a decode loop carries."""
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["state", "half"], ["scaled"]),
            helper.make_node("Add", ["scaled", "x"], ["next_state"]),
        ],
        "state",
        [
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [256, 256]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256]),
        ],
        [helper.make_tensor_value_info("next_state", TensorProto.FLOAT, [256, 256])],
        [half],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_big_output_fed_back_is_read_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big outputs start on a 64-byte boundary, so a loop that passes its state back in
    costs no input copy; the numbers are a numpy loop's and each call's output is new."""
    path = state_model(tmp_path / "state.onnx")
    preset = resolve_preset("x86")
    compile_model(load_onnx(path), preset, tmp_path / "art", CompileOptions())
    model = tvmflow.load(tmp_path / "art")
    in_place: list[tuple[int, ...]] = []
    share = runtime.tvm_ffi.from_dlpack

    def counted(array: np.ndarray, **kwargs: Any) -> Any:
        in_place.append(array.shape)
        return share(array, **kwargs)

    monkeypatch.setattr(runtime.tvm_ffi, "from_dlpack", counted)
    rng = np.random.default_rng(0)
    state = _unaligned(np.zeros((256, 256), np.float32))  # the first call copies it
    want = state.copy()
    outputs = []
    for _ in range(3):
        x = rng.standard_normal((1, 256)).astype(np.float32)
        state = model.run({"state": state, "x": x})["next_state"]
        want = want * np.float32(0.5) + x
        assert state.ctypes.data % 64 == 0 and state.flags.c_contiguous and state.flags.writeable
        np.testing.assert_allclose(state, want, rtol=1e-6, atol=1e-6)
        outputs.append(state)
    assert in_place == [(256, 256), (256, 256)]  # the 2nd and 3rd calls took the state as is
    assert not np.shares_memory(outputs[0], outputs[1])


@pytest.mark.parametrize("in_place_from", [0, runtime.ZERO_COPY_BYTES], ids=["in-place", "copied"])
def test_an_output_that_is_the_input_is_still_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_place_from: int
) -> None:
    """An Identity's output is the VM's input tensor itself (the caller's array, or this
    thread's buffer the next call overwrites): run copies it."""
    monkeypatch.setattr(runtime, "ZERO_COPY_BYTES", in_place_from)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["z"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 16])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 16]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [16, 16]),
        ],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    compile_model(load_onnx(path), resolve_preset("x86"), tmp_path / "art", CompileOptions())
    model = tvmflow.load(tmp_path / "art")
    values = np.arange(256, dtype=np.float32).reshape(16, 16)
    x = _aligned(values)
    first = model.run({"x": x})["y"]
    x[...] = -1.0  # the caller reuses its array
    second = model.run({"x": _aligned(np.zeros((16, 16), np.float32))})["y"]
    np.testing.assert_array_equal(first, values)
    assert not second.any() and not np.shares_memory(first, x)


def _vm_time_split() -> Any:
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "scripts" / "vm_time_split.py"
    spec = importlib.util.spec_from_file_location("vm_time_split", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vm_time_split_counts_the_calling_threads_samples_by_library() -> None:
    """perf's per-thread, per-library lines: kernels (and the libc copies they call), the VM
    (TVM's runtime, tvm_ffi, the rest of libc), Python and the OS; other threads ignored."""
    report = """
# Overhead  Pid:Command  Shared Object  Symbol
    90.00%  7:python  model.so  [.] fused_conv2d_add_relu_compute_
     3.00%  7:python  libc.so.6  [.] __memmove_avx512_unaligned_erms
     2.00%  7:python  libc.so.6  [.] malloc
     2.00%  7:python  libtvm_runtime.so  [.] tvm::runtime::vm::VMExecutable::GetInstruction
     1.00%  7:python  libpython3.11.so.1.0  [.] _PyEval_EvalFrameDefault
     2.00%  7:python  [kernel.kallsyms]  [k] __schedule
     9.00%  8:python  [kernel.kallsyms]  [k] do_sched_yield
"""
    shares = _vm_time_split().split(report, 7)
    assert shares == pytest.approx({"kernels": 0.93, "vm": 0.04, "python": 0.01, "os": 0.02})


def test_vm_time_split_script_samples_a_loop_of_vm_calls(
    artifacts: dict[str, Artifact], tmp_path: Path
) -> None:
    """scripts/vm_time_split.py under perf on a real artifact: the shares add up and the
    kernels' is there (skipped where perf is missing or may not attach)."""
    import shutil

    if shutil.which("perf") is None:
        pytest.skip("perf is not installed")
    script = Path(__file__).resolve().parent.parent / "scripts" / "vm_time_split.py"
    out = tmp_path / "split.json"
    argv = [str(artifacts["mlp"].directory), "--seconds", "0.5", "--json", str(out)]
    proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    if proc.returncode == 2 and "perf" in proc.stderr:
        pytest.skip(f"perf cannot sample here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text()).values()
    assert row["calls"] > 0 and row["cpu_ms"] > 0
    shares = {k: v for k, v in row.items() if k not in ("calls", "cpu_ms")}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["kernels"] > 0, shares
