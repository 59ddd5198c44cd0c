"""The CLI end to end, in-process: compile, inspect, run, demo, and every bad-input path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tvmflow.cli import main


@pytest.fixture(scope="module")
def mlp_artifact(zoo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "mlp"
    rc = main(
        [
            "compile",
            str(zoo_dir / "mlp.onnx"),
            "-t",
            "x86",
            "-o",
            str(out),
            "--input-shape",
            "x=2,64",
        ]
    )
    assert rc == 0
    return out


def test_compile_prints_summary(mlp_artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (mlp_artifact / "model.so").is_file()
    data = json.loads((mlp_artifact / "manifest.json").read_text())
    assert data["inputs"][0]["shape"] == [2, 64]


def test_inspect_prints_manifest(mlp_artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(mlp_artifact)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["inputs"][0]["name"] == "x" and "library_sha256" in data


def test_run_random_and_save(mlp_artifact: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.npz"
    assert main(["run", str(mlp_artifact), "--random", "-o", str(out)]) == 0
    with np.load(out) as data:
        assert sorted(data.files) == ["hidden", "logits"] and data["logits"].shape == (2, 16)
    assert "logits: float32[2, 16]" in capsys.readouterr().out


def test_run_with_npy_and_npz_inputs_agree(mlp_artifact: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(5).standard_normal((2, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "in.npz", x=x)
    assert (
        main(
            [
                "run",
                str(mlp_artifact),
                "--input",
                f"x={tmp_path / 'x.npy'}",
                "-o",
                str(tmp_path / "a.npz"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "run",
                str(mlp_artifact),
                "--inputs",
                str(tmp_path / "in.npz"),
                "-o",
                str(tmp_path / "b.npz"),
            ]
        )
        == 0
    )
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        np.testing.assert_array_equal(a["logits"], b["logits"])


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # exactly one line
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "{art}"], "give either --random or inputs"),
        (["run", "{art}", "--random", "--inputs", "{npz}"], "give either --random or inputs"),
        (["run", "{art}", "--input", "x"], "is not NAME=FILE.npy"),
        (["run", "{art}", "--input", "x=/no/such.npy"], "does not exist"),
        (["run", "{art}", "--inputs", "{badnpz}"], "inputs do not match the model"),
        (["inspect", "{tmp}"], "not a tvmflow artifact"),
        (["run", "{tmp}", "--random"], "not a tvmflow artifact"),
        (["compile", "{tmp}/none.onnx", "-t", "x86", "-o", "{tmp}/o"], "does not exist"),
        (
            ["compile", "{model}", "-t", "x86", "-o", "{tmp}/o", "--input-shape", "x=2,a"],
            "is not NAME=D1,D2",
        ),
        (
            ["compile", "{model}", "-t", "x86", "-o", "{tmp}/o", "--input-shape", "x=0,64"],
            "positive integer dims",
        ),
        (
            [
                "compile",
                "{model}",
                "-t",
                "x86",
                "-o",
                "{tmp}/o",
                "--input-shape",
                "x=2,64",
                "--tuning-log",
                "{tmp}",
            ],
            "is not a tuning log directory",
        ),
        (["compile", "{model}", "-o", "{tmp}/o"], "Missing option '--target'"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str],
    message: str,
    mlp_artifact: Path,
    zoo_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    np.savez(tmp_path / "in.npz", x=np.ones((2, 64), np.float32))
    np.savez(tmp_path / "bad.npz", x=np.ones((3, 64), np.float32))
    subs = {
        "art": str(mlp_artifact),
        "tmp": str(tmp_path),
        "npz": str(tmp_path / "in.npz"),
        "badnpz": str(tmp_path / "bad.npz"),
        "model": str(zoo_dir / "mlp.onnx"),
    }
    rc = main([a.format(**subs) for a in args])
    err = _err(capsys)
    assert rc == 2 and message in err, err


def test_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--debug", "inspect", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" in err and "not a tvmflow artifact" in err


def test_accuracy_failure_exits_1(zoo_dir: Path, tmp_path: Path, capsys) -> None:
    rc = main(
        [
            "compile",
            str(zoo_dir / "resnet_block.onnx"),
            "-t",
            "x86",
            "-o",
            str(tmp_path / "o"),
            "--input-shape",
            "image=1,3,64,64",
            "--atol",
            "0",
            "--rtol",
            "0",
        ]
    )
    assert rc == 1 and "beyond tolerance" in _err(capsys)


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and (tmp_path / "artifact" / "model.so").is_file()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "0.1.0" in capsys.readouterr().out


def test_compile_threads_builds_for_that_many_runtime_threads(
    zoo_dir: Path, tmp_path: Path
) -> None:
    """`--threads 1` sets the target's num-cores to 1 (serial kernels), the artifact still
    verifies against onnxruntime; 0 threads is refused before anything is compiled."""
    out = tmp_path / "serial"
    args = ["compile", str(zoo_dir / "mlp.onnx"), "-t", "x86", "-o", str(out)]
    assert main([*args, "--threads", "1", "--input-shape", "x=2,64"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"]["num-cores"] == 1 and manifest["accuracy"]
    assert main([*args[:-1], str(tmp_path / "zero"), "--threads", "0"]) == 2
    assert not (tmp_path / "zero").exists()
