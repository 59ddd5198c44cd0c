"""Rank-0 (scalar) inputs: `--input-shape NAME=`, random inputs, compile + verify, run, bench,
tvmflow.load, on a generated model and on silero-vad (its `sr` sample-rate input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tvmflow
from tests.conftest import real_model
from tvmflow.accuracy import onnxruntime_outputs
from tvmflow.cli import SHAPE, main
from tvmflow.frontend import load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.manifest import TensorSpec

QUICK = ["--warmup", "1", "--rounds", "2", "--min-time", "0.05", "--no-rss"]


def scalar_model(path: Path) -> Path:
    """y = x * scale + float(step): a float and an int64 scalar next to a dynamic tensor."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "scale"], ["scaled"]),
            helper.make_node("Cast", ["step"], ["stepf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["scaled", "stepf"], ["y"]),
        ],
        "scalars",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("step", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_shape_syntax_for_scalars() -> None:
    assert SHAPE.convert("sr=", None, None) == ("sr", ())
    assert SHAPE.convert("x=1,3", None, None) == ("x", (1, 3))


def test_random_inputs_are_rank_0_arrays() -> None:
    feeds = random_inputs((TensorSpec("s", (), "float32"), TensorSpec("i", (), "int64")))
    assert all(isinstance(a, np.ndarray) and a.shape == () for a in feeds.values())
    assert feeds["s"].dtype == np.float32 and feeds["i"].dtype == np.int64


def test_scalar_inputs_compile_run_and_bench(tmp_path: Path, capsys) -> None:
    model = scalar_model(tmp_path / "scalars.onnx")
    out = tmp_path / "art"
    shapes = ["--input-shape", "x=3,8", "--input-shape", "scale=", "--input-shape", "step="]
    assert main(["compile", str(model), "-t", "x86", "-o", str(out), *shapes]) == 0
    compiled = tvmflow.load(out)
    assert [s.shape for s in compiled.inputs] == [(3, 8), (), ()]
    feeds: dict[str, np.ndarray] = {
        "x": np.arange(24, dtype=np.float32).reshape(3, 8),
        "scale": np.array(0.5, np.float32),
        "step": np.array(3, np.int64),
    }
    np.testing.assert_allclose(compiled.run(feeds)["y"], onnxruntime_outputs(model, feeds)["y"])
    np.save(tmp_path / "scale.npy", feeds["scale"])
    np.save(tmp_path / "step.npy", feeds["step"])
    np.save(tmp_path / "x.npy", feeds["x"])
    args = [f"{n}={tmp_path / n}.npy" for n in ("x", "scale", "step")]
    assert main(["run", str(out), *[a for arg in args for a in ("--input", arg)]]) == 0
    assert main(["run", str(out), "--random"]) == 0
    assert main(["bench", str(model), "--artifact", str(out), *QUICK]) == 0
    assert "accuracy tvmflow vs onnxruntime: pass" in capsys.readouterr().out


def test_scalar_given_dims_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    model = scalar_model(tmp_path / "scalars.onnx")
    rc = main(
        [
            "compile",
            str(model),
            "-t",
            "x86",
            "-o",
            str(tmp_path / "a"),
            "--input-shape",
            "x=3,8",
            "--input-shape",
            "scale=1",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--input-shape scale=" in err[0]


def test_silero_vad_sample_rate_scalar(tmp_path: Path) -> None:
    """silero-vad's ONNX model takes the sample rate as an int64 scalar `sr`."""
    path = real_model("silero-vad.onnx")
    imported = load_onnx(path, {"input": (1, 512), "state": (2, 1, 128), "sr": ()})
    assert {s.name: s.shape for s in imported.inputs}["sr"] == ()
    from tvmflow.compile import compile_model
    from tvmflow.targets import resolve_preset

    artifact = compile_model(imported, resolve_preset("x86"), tmp_path / "vad")
    assert artifact.manifest.accuracy is not None  # verified against onnxruntime
    compiled = tvmflow.load(artifact.directory)
    rng = np.random.default_rng(3)
    for sr in (16000, 8000):
        feeds: dict[str, np.ndarray] = {
            "input": rng.uniform(-1, 1, (1, 512)).astype(np.float32),
            "state": np.zeros((2, 1, 128), np.float32),
            "sr": np.array(sr, np.int64),
        }
        expected = onnxruntime_outputs(path, feeds)
        for name, value in compiled.run(feeds).items():
            np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("given", ["scale=1", "x="])
def test_wrong_rank_names_the_declared_shape(tmp_path: Path, given: str) -> None:
    from tvmflow.errors import TvmflowError

    name, shape = SHAPE.convert(given, None, None)
    with pytest.raises(TvmflowError, match="--input-shape"):
        load_onnx(scalar_model(tmp_path / "s.onnx"), {"x": (3, 8), name: shape})
