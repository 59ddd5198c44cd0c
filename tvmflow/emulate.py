"""Run artifacts on this machine: natively, or aarch64 ones under qemu-user emulation.

An ARM artifact built on an x86 box is checked by running it with the production loader
(`tvmflow.runtime.load`) inside an emulated Debian arm64 userland, the sysroot that
`scripts/arm-sysroot` builds: the host writes the inputs to an .npz file, runs this module
(`python -m tvmflow.emulate`) under the sysroot's python, and reads the outputs back.
Emulation proves that the library loads and computes the right numbers on aarch64; its
timings say nothing about speed. Because it also runs inside the sysroot, this module
imports only the standard library, numpy and tvmflow's runtime-side modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tvmflow.errors import EmulationError, TvmflowError
from tvmflow.inputs import check_inputs
from tvmflow.manifest import read_manifest
from tvmflow.targets import find_tool

if TYPE_CHECKING:
    from tvmflow.targets import Preset

PACKAGE_DIR = Path(__file__).resolve().parent
SYSROOT_ENV = "TVMFLOW_ARM_SYSROOT"
DEFAULT_SYSROOT = PACKAGE_DIR.parent / ".cache" / "arm-sysroot"
QEMU = "qemu-aarch64-static"
EMULATED_ARCH = "aarch64"
_REFUSED = 2  # the emulated loader's exit status for a TvmflowError (its message: stderr)

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class HostRunner:
    """How this machine runs an artifact directory; `description` goes into the manifest."""

    description: str
    run: Callable[[Path, Mapping[str, np.ndarray]], Outputs]


def sysroot() -> Path:
    """Where scripts/arm-sysroot puts the emulated environment ($TVMFLOW_ARM_SYSROOT)."""
    return Path(os.environ.get(SYSROOT_ENV) or DEFAULT_SYSROOT)


def emulator_python() -> Path | None:
    """The sysroot's launcher, when the sysroot is built and qemu is installed."""
    python = sysroot() / "bin" / "python"
    if find_tool(QEMU) is None or not python.is_file() or not (sysroot() / "stamp").is_file():
        return None
    return python


def require_emulator() -> Path:
    """The launcher, or an error that says which set-up step is missing."""
    if find_tool(QEMU) is None:
        raise TvmflowError(
            f"emulating aarch64 needs {QEMU}, which is not on PATH: install it with "
            "`apt-get install qemu-user-static` (scripts/setup does it as root)"
        )
    python = emulator_python()
    if python is None:
        raise TvmflowError(
            f"no aarch64 emulation environment at {sysroot()}: run scripts/arm-sysroot to "
            f"build it (or set {SYSROOT_ENV} to where it is)"
        )
    return python


@cache
def _qemu_cpu_models() -> frozenset[str]:
    qemu = find_tool(QEMU)
    if qemu is None:
        return frozenset()
    proc = subprocess.run([str(qemu), "-cpu", "help"], capture_output=True, text=True)
    return frozenset(line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip())


def qemu_cpu(target: Mapping[str, object]) -> str:
    """qemu's model of the target's CPU when it has one (neoverse-n1, cortex-a72), else max."""
    mcpu = str(target.get("mcpu", ""))
    return mcpu if mcpu in _qemu_cpu_models() else "max"


def run_emulated(
    directory: str | Path,
    inputs: Mapping[str, np.ndarray],
    num_threads: int | None = None,
    timeout: float | None = None,
) -> Outputs:
    """Run an aarch64 artifact under qemu with the production loader; returns its outputs."""
    directory = Path(directory).resolve()
    manifest = read_manifest(directory)
    if manifest.arch != EMULATED_ARCH or manifest.device != "cpu":
        raise TvmflowError(
            f"{directory} is a {manifest.device}/{manifest.arch} artifact (preset "
            f"{manifest.preset}); emulation runs {EMULATED_ARCH} CPU artifacts only: run it "
            "without --emulate on a machine it was built for"
        )
    check_inputs(inputs, manifest.inputs, manifest.frozen)
    python = require_emulator()
    with tempfile.TemporaryDirectory(prefix="tvmflow-emulate-") as tmp:
        work = Path(tmp)
        # only the tvmflow package goes on the emulated path, never the host's site-packages
        (work / "pkgs").mkdir()
        (work / "pkgs" / "tvmflow").symlink_to(PACKAGE_DIR, target_is_directory=True)
        _savez(work / "inputs.npz", inputs)
        command = [str(python), "-m", "tvmflow.emulate", str(directory), str(work / "inputs.npz")]
        command += [str(work / "outputs.npz"), str(num_threads or 0)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env |= {
            "PYTHONPATH": str(work / "pkgs"),
            "TVM_USE_RUNTIME_LIB": "1",
            "QEMU_CPU": qemu_cpu(manifest.target),
        }
        try:
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            message = f"{directory} did not finish under emulation in {timeout}s"
            raise EmulationError(message) from exc
        _raise_for(proc, directory)
        with np.load(work / "outputs.npz", allow_pickle=False) as data:
            outputs = {key: data[key] for key in data.files}
    return {s.name: outputs[s.name] for s in manifest.outputs}


def _raise_for(proc: subprocess.CompletedProcess[str], directory: Path) -> None:
    """Exit 2 in the emulated loader is a user-facing refusal; anything else is a failure."""
    if proc.returncode == 0:
        return
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode == _REFUSED and lines:
        raise TvmflowError(lines[-1])
    tail = " | ".join(lines[-3:]) or "no output"
    raise EmulationError(
        f"{directory} failed under emulation ({QEMU}, exit status {proc.returncode}): {tail}"
    )


def host_runner(preset: Preset) -> HostRunner | None:
    """How this machine can run artifacts of `preset`: natively, emulated, or not at all."""
    if preset.runs_on_host():
        return HostRunner("native (CUDA GPU)" if preset.device == "cuda" else "native", _run_native)
    if preset.device == "cpu" and preset.arch == EMULATED_ARCH and emulator_python() is not None:
        return HostRunner(f"emulated: {QEMU} -cpu {qemu_cpu(preset.target)}", run_emulated)
    return None


def _run_native(directory: Path, inputs: Mapping[str, np.ndarray]) -> Outputs:
    from tvmflow.runtime import load

    return load(directory).run(inputs)


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub: any key may be allow_pickle


def _guest_main(argv: Sequence[str]) -> int:
    """Inside the sysroot: ARTIFACT INPUTS.npz OUTPUTS.npz THREADS (0: TVM's default)."""
    from tvmflow.runtime import load

    directory, inputs, outputs, threads = argv
    try:
        with np.load(inputs, allow_pickle=False) as data:
            feeds = {key: data[key] for key in data.files}
        model = load(directory, num_threads=int(threads) or None)
        result = model.run(feeds)
    except TvmflowError as exc:
        print(exc, file=sys.stderr)
        return _REFUSED
    _savez(Path(outputs), result)
    return 0


if __name__ == "__main__":
    sys.exit(_guest_main(sys.argv[1:]))
