"""`--freeze NAME=VALUE`: an input baked in as a constant before import, so an `If` on it folds
away. Checked on a generated model whose other branch cannot type-check (TVM's importer builds
both branches) and on silero-vad-v6 (an `If` on its sample rate `sr`)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tvmflow
from tests.conftest import real_model
from tvmflow.accuracy import onnxruntime_outputs
from tvmflow.cli import main
from tvmflow.errors import TvmflowError

QUICK = ["--warmup", "1", "--rounds", "2", "--min-time", "0.05", "--no-rss"]


def branch_model(path: Path) -> Path:
    """y = x @ (w1 if width != 16 else w2): x is [1, n], w1 [8, 4], w2 [16, 4]. At n=8 only the
    first branch type-checks, so importing the If as it is fails."""
    w1 = numpy_helper.from_array(np.arange(32, dtype=np.float32).reshape(8, 4) / 32, "w1")
    w2 = numpy_helper.from_array(np.ones((16, 4), np.float32), "w2")

    def branch(weight: str) -> onnx.GraphProto:
        out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
        return helper.make_graph(
            [helper.make_node("MatMul", ["x", weight], ["b"])], weight, [], [out]
        )

    wide = numpy_helper.from_array(np.array(16, np.int64))
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["wide"], value=wide),
            helper.make_node("Equal", ["width", "wide"], ["is_wide"]),
            helper.make_node("Not", ["is_wide"], ["narrow"]),
            helper.make_node(
                "If", ["narrow"], ["y"], then_branch=branch("w1"), else_branch=branch("w2")
            ),
        ],
        "branchy",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"]),
            helper.make_tensor_value_info("width", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[w1, w2],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("tvmflow:")]
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_if_on_a_runtime_input_names_the_input_to_freeze(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = branch_model(tmp_path / "branchy.onnx")
    args = ["compile", str(model), "-t", "x86", "-o", str(tmp_path / "art")]
    # a valid model TVM's importer cannot take is tvmflow's failure: exit 1, not 2
    assert main([*args, "--input-shape", "x=1,8", "--input-shape", "width="]) == 1
    line = _stderr_line(capsys)
    assert "importer failed" in line and "--freeze width=VALUE" in line and "--debug" in line
    assert not (tmp_path / "art").exists()


def test_frozen_input_compiles_runs_and_benches_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = branch_model(tmp_path / "branchy.onnx")
    out = tmp_path / "art"
    flags = ["--input-shape", "x=1,8", "--freeze", "width=8"]
    assert main(["compile", str(model), "-t", "x86", "-o", str(out), *flags]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["x"]
    assert manifest["frozen"] == [{"name": "width", "shape": [], "dtype": "int64", "values": [8]}]

    compiled = tvmflow.load(out)
    assert [s.name for s in compiled.inputs] == ["x"]
    x = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    want = onnxruntime_outputs(model, {"x": x, "width": np.array(8, np.int64)})["y"]
    np.testing.assert_allclose(compiled.run({"x": x})["y"], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(TvmflowError, match="width was frozen at compile time"):
        compiled.run({"x": x, "width": np.array(8, np.int64)})

    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", np.array(8, np.int64))
    capsys.readouterr()
    run = ["run", str(out), "--input", f"x={tmp_path / 'x.npy'}"]
    assert main([*run, "--input", f"width={tmp_path / 'w.npy'}"]) == 2
    assert "--freeze width=8" in _stderr_line(capsys)
    assert main(run) == 0
    # bench feeds onnxruntime (which runs the original file) the frozen value
    assert main(["bench", str(model), "--artifact", str(out), "--threads", "1", *QUICK]) == 0
    assert "accuracy tvmflow vs onnxruntime: pass" in capsys.readouterr().out


def test_freeze_through_the_library(tmp_path: Path) -> None:
    model = branch_model(tmp_path / "branchy.onnx")
    artifact = tvmflow.compile(
        model, "x86", output=tmp_path / "art", input_shapes={"x": [1, 16]}, freeze={"width": 16}
    )
    assert [f.describe() for f in artifact.manifest.frozen] == ["width=16"]
    assert artifact.manifest.accuracy  # verified against onnxruntime fed width=16


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("width=8.5", "is not a valid int64 value"),
        ("width=abc", "is not a valid int64 value"),
        ("width=99999999999999999999", "is not a valid int64 value"),
        ("width=8,16", "2 value(s) given"),
        ("depth=8", "--freeze names unknown input(s) depth"),
        ("width=", "is not NAME=VALUE"),
    ],
)
def test_bad_freeze_values_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, problem: str
) -> None:
    model = branch_model(tmp_path / "branchy.onnx")
    args = ["compile", str(model), "-t", "x86", "-o", str(tmp_path / "art")]
    assert main([*args, "--input-shape", "x=1,8", "--freeze", value]) == 2
    assert problem in _stderr_line(capsys)
    assert not (tmp_path / "art").exists()


def test_silero_vad_v6_compiles_with_its_sample_rate_frozen(tmp_path: Path) -> None:
    model = real_model("silero-vad-v6.onnx")
    shapes = {"input": [1, 576], "state": [2, 1, 128]}
    artifact = tvmflow.compile(
        model, "x86", output=tmp_path / "art", input_shapes=shapes, freeze={"sr": "16000"}
    )
    compiled = tvmflow.load(artifact.directory)
    assert [s.name for s in compiled.inputs] == ["input", "state"]
    feeds = {
        "input": np.random.default_rng(0).standard_normal((1, 576)).astype(np.float32),
        "state": np.zeros((2, 1, 128), np.float32),
    }
    want = onnxruntime_outputs(model, {**feeds, "sr": np.array(16000, np.int64)})
    got = compiled.run(feeds)
    np.testing.assert_allclose(got["output"], want["output"], rtol=1e-4, atol=1e-5)


SERVE_PROBE = """
import sys
from concurrent.futures import ThreadPoolExecutor
import kserve, numpy as np
import tvmflow
from tvmflow.serve import ServedModel

def request(**arrays):
    inputs = []
    for name, array in arrays.items():
        kind = "FP32" if array.dtype.kind == "f" else "INT64"
        tensor = kserve.InferInput(name, list(array.shape), kind)
        tensor.set_data_from_numpy(array, binary_data=False)
        inputs.append(tensor)
    return kserve.InferRequest("m", infer_inputs=inputs)

with ThreadPoolExecutor(1) as pool:
    served = ServedModel("m", tvmflow.load(sys.argv[1]), pool)
    x = np.zeros((1, 8), np.float32)
    assert list(served._arrays(request(x=x))) == ["x"]
    try:
        served._arrays(request(x=x, width=np.array([8], np.int64)))
    except Exception as exc:
        print(exc)
"""


def test_serve_refuses_a_frozen_input(tmp_path: Path) -> None:
    # kserve is imported only in the child: in this process it would clash with tritonclient's
    # protobuf messages (tests/test_serve.py imports those)
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("kserve is not installed")
    model = branch_model(tmp_path / "branchy.onnx")
    out = tmp_path / "art"
    tvmflow.compile(model, "x86", output=out, input_shapes={"x": [1, 8]}, freeze={"width": 8})
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_PROBE, str(out)], capture_output=True, text=True, check=True
    )
    assert "width was frozen at compile time (--freeze width=8)" in proc.stdout
