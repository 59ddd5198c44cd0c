"""`tvmflow bench`: reports, accuracy verdicts and every bad-input case (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import real_model
from tvmflow import bench, reporting, zoo
from tvmflow.cli import main
from tvmflow.compile import Artifact
from tvmflow.manifest import read_manifest, write_manifest

QUICK = ["--warmup", "1", "--rounds", "2", "--min-time", "0.05"]
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def _bench(model: Path, *args: str) -> int:
    return main(["bench", str(model), *args, *QUICK])


def test_bench_writes_json_markdown_and_plot(
    zoo_dir: Path, artifacts: dict[str, Artifact], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = {k: tmp_path / f"report.{k}" for k in ("json", "md", "png")}
    rc = _bench(
        zoo_dir / "conv_net.onnx",
        "--artifact",
        str(artifacts["conv_net"].directory),
        "--json",
        str(out["json"]),
        "--markdown",
        str(out["md"]),
        "--plot",
        str(out["png"]),
    )
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "p50 tvmflow/onnxruntime" in stdout and "accuracy tvmflow vs onnxruntime: pass" in stdout

    data = json.loads(out["json"].read_text())
    assert set(data["machine"]) >= {"cpu", "physical_cores", "threads_used", "versions"}
    assert data["machine"]["versions"]["onnxruntime"]
    (result,) = data["results"]
    assert set(result["engines"]) == {"tvmflow", "onnxruntime"}
    for stats in result["engines"].values():
        assert {"load_s", "first_run_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms"} <= set(
            stats
        )
        assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
        assert stats["runs"] >= 2  # at least one call per engine per round
        assert stats["throughput_per_s"] == pytest.approx(1e3 / stats["mean_ms"])
        # measured in a fresh child process per engine: the engine adds memory to its imports
        assert 0 < stats["base_rss_mb"] <= stats["peak_rss_mb"]
    assert all(math.isfinite(n) for n in _numbers(result))
    ratio = result["ratios"]["tvmflow/onnxruntime"]
    engines = result["engines"]
    assert ratio["p50_ratio"] == pytest.approx(
        engines["tvmflow"]["p50_ms"] / engines["onnxruntime"]["p50_ms"]
    )
    low, high = ratio["ci95"]
    assert low <= ratio["p50_ratio"] <= high
    acc = result["accuracy"]["tvmflow"]
    assert acc["passed"] and result["passed"]
    assert set(acc["outputs"]) == {"features"}
    assert acc["outputs"]["features"]["cosine"] > 0.9999

    markdown = out["md"].read_text()
    assert "| model |" in markdown and "tvmflow/onnxruntime p50 [95% CI]" in markdown
    assert "| conv_net | tvmflow |" in markdown and "| conv_net | onnxruntime |" in markdown
    assert data["machine"]["cpu"] in markdown

    png = out["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(out["png"]).shape
    assert height > 100 and width > 100


def test_bench_compiles_with_target(zoo_dir: Path, capsys: pytest.CaptureFixture) -> None:
    rc = _bench(zoo_dir / "mlp.onnx", "--target", "x86", "--input-shape", "x=3,64", "--no-rss")
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    assert "tvmflow compile:" in stdout
    assert "mlp (x: float32[3,64])" in stdout


def test_bench_library_report(zoo_dir: Path, artifacts: dict[str, Artifact]) -> None:
    options = bench.BenchOptions(warmup=0, rounds=2, min_time=0.02, measure_rss=False)
    feeds = {"x": np.ones((4, 64), np.float32)}
    report = bench.run_bench(zoo_dir / "mlp.onnx", artifacts["mlp"].directory, options, feeds)
    assert [e.name for e in report.engines] == ["tvmflow", "onnxruntime"]
    assert all(e.peak_rss_mb is None for e in report.engines)
    assert len(report.engine("tvmflow").samples_ms) == report.engine("tvmflow").runs
    (acc,) = report.accuracy
    assert acc.passed and {o.name for o in acc.outputs} == {"hidden", "logits"}
    doc = reporting.reports_json([report, report])
    assert len(doc["results"]) == 2
    json.dumps(doc, allow_nan=False)
    assert reporting.to_markdown([report]).count("| mlp |") == 3  # summary row + one per engine


def test_bootstrap_ratio_is_seeded_and_brackets_the_point_estimate() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(1.0, 2.0, 301)
    first = bench._ratio("a", "b", list(base * 3), list(base), 500, np.random.default_rng(7))
    again = bench._ratio("a", "b", list(base * 3), list(base), 500, np.random.default_rng(7))
    assert first == again
    assert first.p50_ratio == pytest.approx(3.0)
    assert first.ci_low <= 3.0 <= first.ci_high


def test_accuracy_failure_exits_3(
    zoo_dir: Path,
    artifacts: dict[str, Artifact],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """Zero tolerance: reordered fp32 sums differ in the last bits, so the check fails, and the
    report is still written."""
    report = tmp_path / "r.json"
    rc = _bench(
        zoo_dir / "conv_net.onnx",
        "--artifact",
        str(artifacts["conv_net"].directory),
        "--no-rss",
        "--atol",
        "0",
        "--rtol",
        "0",
        "--json",
        str(report),
    )
    captured = capsys.readouterr()
    assert rc == 3
    assert "tvmflow disagrees with onnxruntime beyond tolerance" in captured.err
    assert "features" in captured.err
    (result,) = json.loads(report.read_text())["results"]  # the report is written before exit 3
    assert result["passed"] is False
    assert result["accuracy"]["tvmflow"]["outputs"]["features"]["passed"] is False


def test_artifact_of_another_file_with_the_same_signature_exits_2(
    artifacts: dict[str, Artifact], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Other weights, same signature: comparing them would blame the compiler for the model."""
    import onnx

    other = tmp_path / "conv_net.onnx"
    onnx.save(zoo.conv_net(seed=1), str(other))
    rc = _bench(other, "--artifact", str(artifacts["conv_net"].directory), "--no-rss")
    assert rc == 2
    assert "compiled from another file" in _error(capsys)


def _error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("tvmflow: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_artifact_from_another_model_exits_2(
    zoo_dir: Path, artifacts: dict[str, Artifact], capsys: pytest.CaptureFixture
) -> None:
    rc = _bench(zoo_dir / "mlp.onnx", "--artifact", str(artifacts["conv_net"].directory))
    assert rc == 2
    err = _error(capsys)
    assert "built from a different model" in err and "mlp.onnx is (x: float32[?,64])" in err


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"images": np.zeros((2, 3, 32, 32), np.float32)}, "missing image; unknown images"),
        ({"image": np.zeros((1, 3, 32, 32), np.float32)}, "image is float32[1,3,32,32]"),
        ({"image": np.zeros((2, 3, 32, 32), np.float64)}, "image is float64[2,3,32,32]"),
    ],
)
def test_inputs_file_that_does_not_match_exits_2(
    zoo_dir: Path,
    artifacts: dict[str, Artifact],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    arrays: dict[str, Any],
    expected: str,
) -> None:
    npz = tmp_path / "in.npz"
    np.savez(npz, **arrays)
    rc = _bench(
        zoo_dir / "conv_net.onnx",
        "--artifact",
        str(artifacts["conv_net"].directory),
        "--inputs",
        str(npz),
    )
    assert rc == 2
    err = _error(capsys)
    assert str(npz) in err and expected in err and "expected image: float32[2,3,32,32]" in err


def test_inputs_file_is_used(
    zoo_dir: Path, artifacts: dict[str, Artifact], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.full((4, 64), 0.5, np.float32))
    args = ["--artifact", str(artifacts["mlp"].directory), "--inputs", str(npz), "--no-rss"]
    assert _bench(zoo_dir / "mlp.onnx", *args) == 0
    assert "accuracy tvmflow vs onnxruntime: pass" in capsys.readouterr().out


def _foreign_copy(artifact: Artifact, tmp_path: Path, **changes: Any) -> Path:
    directory = tmp_path / "foreign"
    shutil.copytree(artifact.directory, directory)
    manifest = read_manifest(directory)
    write_manifest(directory, type(manifest)(**{**manifest.__dict__, **changes}))
    return directory


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"arch": "aarch64", "preset": "arm-neoverse-n1"},
            "target arm-neoverse-n1 runs on aarch64 and this machine is x86_64",
        ),
        (
            {"cpu_features": ("avx2", "made_up_feature")},
            "needs CPU features made_up_feature that this machine lacks",
        ),
    ],
)
def test_artifact_that_cannot_run_here_exits_2(
    zoo_dir: Path,
    artifacts: dict[str, Artifact],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    changes: dict[str, Any],
    expected: str,
) -> None:
    foreign = _foreign_copy(artifacts["conv_net"], tmp_path, **changes)
    assert _bench(zoo_dir / "conv_net.onnx", "--artifact", str(foreign)) == 2
    assert expected in _error(capsys)


def test_target_that_cannot_run_here_exits_2(zoo_dir: Path, capsys: pytest.CaptureFixture) -> None:
    rc = _bench(zoo_dir / "mlp.onnx", "--target", "arm-neoverse-n1", "--input-shape", "x=4,64")
    assert rc == 2
    assert "target arm-neoverse-n1 runs on aarch64" in _error(capsys)


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has an NVIDIA GPU")
def test_cuda_target_without_gpu_exits_2(zoo_dir: Path, capsys: pytest.CaptureFixture) -> None:
    rc = _bench(zoo_dir / "mlp.onnx", "--target", "cuda-sm80", "--input-shape", "x=4,64")
    assert rc == 2
    assert "cuda-sm80 runs on an NVIDIA GPU and no CUDA GPU is visible on this machine" in _error(
        capsys
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--compare", "onnxruntime,tensorrt"], "unknown engine(s) to compare with: tensorrt"),
        (["--target", "x86"], "give exactly one of --artifact DIR or --target NAME"),
        (["--input-shape", "image=1,3,32,32"], "does not match artifact"),
        (["--tuning-log", "."], "--tuning-log applies to --target only"),
    ],
)
def test_bad_options_exit_2(
    zoo_dir: Path,
    artifacts: dict[str, Artifact],
    capsys: pytest.CaptureFixture,
    args: list[str],
    expected: str,
) -> None:
    artifact = str(artifacts["conv_net"].directory)
    assert _bench(zoo_dir / "conv_net.onnx", "--artifact", artifact, *args) == 2
    assert expected in _error(capsys)


def test_missing_openvino_says_how_to_install(
    zoo_dir: Path,
    artifacts: dict[str, Artifact],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    artifact = str(artifacts["conv_net"].directory)
    rc = _bench(zoo_dir / "conv_net.onnx", "--artifact", artifact, "--compare", "openvino")
    assert rc == 2
    assert "pip install tvmflow[openvino]" in _error(capsys)


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed (tvmflow[openvino])")
def test_openvino_comparator(
    zoo_dir: Path, artifacts: dict[str, Artifact], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report = tmp_path / "r.json"
    args = ["--artifact", str(artifacts["mlp"].directory), "--json", str(report)]
    engines_arg = "onnxruntime,openvino,openvino-default"
    rc = _bench(zoo_dir / "mlp.onnx", *args, "--compare", engines_arg, "--no-rss")
    assert rc == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    (result,) = data["results"]
    assert set(result["engines"]) == {"tvmflow", "onnxruntime", "openvino", "openvino-default"}
    ratio = result["ratios"]["tvmflow/openvino"]
    engines = result["engines"]
    assert ratio["p50_ratio"] == pytest.approx(
        engines["tvmflow"]["p50_ms"] / engines["openvino"]["p50_ms"]
    )
    # each engine says what it computed in; OpenVINO's default is bf16 where the CPU has it
    assert engines["tvmflow"]["precision"] == engines["openvino"]["precision"] == "fp32"
    bf16_cpu = "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    assert engines["openvino-default"]["precision"] == ("bf16" if bf16_cpu else "fp32")
    # the best peer is the faster fp32 peer; openvino-default (bf16) is never the bar
    fastest = min(("onnxruntime", "openvino"), key=lambda e: engines[e]["p50_ms"])
    assert result["best_peer"]["engine"] == fastest
    assert result["best_peer"]["p50_ratio"] == result["ratios"][f"tvmflow/{fastest}"]["p50_ratio"]
    assert result["accuracy"]["openvino"]["outputs"]["logits"]["cosine"] > 0.9999
    assert data["machine"]["versions"]["openvino"]


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed (tvmflow[openvino])")
def test_openvino_outputs_keep_their_onnx_names(tmp_path: Path) -> None:
    """OpenVINO drops the Identity, so the compiled port also carries the Relu's name and
    reports that one first; the engine must still answer under the graph's output name."""
    import onnx
    from onnx import TensorProto, helper

    from tvmflow.engines import ENGINES, EngineSpec

    nodes = [
        helper.make_node("Relu", ["x"], ["a_relu"]),
        helper.make_node("Identity", ["a_relu"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "renamed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "renamed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    opened = ENGINES["openvino"].open(EngineSpec("openvino", str(path), 1, shapes={"x": [1, 4]}))
    x = np.array([[-1.0, 0.0, 2.0, -3.0]], np.float32)
    out = opened.run({"x": x})
    assert list(out) == ["z"]
    np.testing.assert_array_equal(out["z"], np.maximum(x, 0))


@pytest.mark.skipif(not HAS_OPENVINO, reason="OpenVINO is not installed (tvmflow[openvino])")
def test_a_model_openvino_cannot_read_says_why_in_one_line() -> None:
    """openWakeWord's hey-jarvis has an If whose condition has rank 2, which OpenVINO's ONNX
    frontend rejects; its error's first line is only a C++ source location."""
    from tvmflow.engines import ENGINES, EngineSpec
    from tvmflow.errors import TvmflowError

    path = real_model("oww-hey-jarvis.onnx")
    with pytest.raises(TvmflowError) as info:
        ENGINES["openvino"].open(EngineSpec("openvino", str(path), 1))
    message = str(info.value)
    assert "\n" not in message and "core.cpp" not in message
    assert "conversion failed for If" in message and "--compare onnxruntime" in message


def test_demo_prints_a_latency_comparison(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "latency   p50 tvmflow" in out and "tvmflow/onnxruntime" in out


def test_compile_for_bench_builds_for_the_benchmarks_thread_count(
    zoo_dir: Path, tmp_path: Path
) -> None:
    """`threads` becomes the target's num-cores (1: serial kernels, as the peers' 1-thread
    sessions are built for one thread); the artifact still verifies."""
    model = zoo_dir / "conv_net.onnx"
    shapes = {"image": (1, 3, 32, 32)}
    artifact, _ = bench.compile_for_bench(model, "x86", tmp_path / "one", shapes, threads=1)
    assert read_manifest(artifact).target["num-cores"] == 1
    options = bench.BenchOptions(1, 1, 2, 0.05, (), measure_rss=False)
    report = bench.run_bench(model, artifact, options, input_shapes=shapes)
    assert report.passed


def test_the_file_an_artifact_was_compiled_from_always_matches(
    zoo_dir: Path, artifacts: dict[str, Artifact]
) -> None:
    """A model's declared output shapes may be wrong (ddddocr's CRNN declares [1, ?] for a
    [T, 1, classes] output); the artifact compiled from that very file (same sha256) is its."""
    from dataclasses import replace

    from tvmflow.bench import check_artifact_matches
    from tvmflow.manifest import TensorSpec

    art = artifacts["conv_net"]
    out = art.manifest.outputs[0]
    other_rank = replace(art.manifest, outputs=(TensorSpec(out.name, (*out.shape, 1), out.dtype),))
    assert check_artifact_matches(zoo_dir / "conv_net.onnx", other_rank, art.directory) == ()
