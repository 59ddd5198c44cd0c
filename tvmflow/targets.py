"""Target presets: named hardware targets loaded from `targets/*.toml` data files.

A preset says what TVM should generate code for (a JSON-dict TVM target), what the code runs
on (device, machine, CPU features the loader checks) and what building it needs (a cross
compiler, nvcc). No TVM import here: the production loader uses the host checks too.
"""

from __future__ import annotations

import difflib
import os
import platform
import shutil
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "targets"
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Preset:
    """One named target. `select_best_of` presets pick the first candidate this host runs."""

    name: str
    description: str
    target: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    arch: str = "x86_64"
    cpu_features: tuple[str, ...] = ()
    cross_compiler: str | None = None
    needs: tuple[str, ...] = ()
    select_best_of: tuple[str, ...] = ()

    @property
    def is_alias(self) -> bool:
        return bool(self.select_best_of)

    @property
    def gpu_arch(self) -> str | None:
        """The GPU architecture a CUDA preset's device code is for ("sm_90"); None on CPUs."""
        return str(self.target.get("arch")) if self.device == "cuda" else None

    def host_mismatch(self) -> str | None:
        """Why this preset's code cannot run on this machine (None: it can)."""
        return host_mismatch(self.arch, self.cpu_features, self.gpu_arch)

    def runs_on_host(self) -> bool:
        """True when artifacts for this preset can be loaded and checked on this machine."""
        return self.host_mismatch() is None

    def for_threads(self, threads: int | None) -> Preset:
        """This preset built for `threads` runtime threads (the target's num-cores): kernels
        are split for that many workers, and at 1 they are serial, with no thread-pool launch
        per call. GPU presets and `None` leave it as it is."""
        if threads is None or self.device != "cpu":
            return self
        return replace(self, target={**self.target, "num-cores": threads})


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def host_mismatch(
    arch: str, cpu_features: Iterable[str], gpu_arch: str | None = None
) -> str | None:
    """Why code for `arch` using `cpu_features` (and, for a CUDA artifact, device code for
    `gpu_arch`) cannot run on this machine (None: it can), as a clause after "it".

    The one host-compatibility check: compile (can it verify?), tune (can it measure?), load
    and bench all ask it. The GPU is probed through TVM's runtime library, not guessed from
    device files.
    """
    if arch != host_arch():
        return f"runs on {arch} and this machine is {host_arch()}"
    missing = sorted(set(cpu_features) - host_cpu_features())
    if missing:
        return f"needs CPU features {', '.join(missing)} that this machine lacks"
    if gpu_arch is None:
        return None
    from tvmflow.cuda import gpu_mismatch
    from tvmflow.runtime import gpu_compute_version  # lazy: the runtime imports this module

    version = gpu_compute_version()
    if version is None:
        return "runs on an NVIDIA GPU and no CUDA GPU is visible on this machine"
    return gpu_mismatch(version, gpu_arch)


@cache
def host_cpu_features() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (x86 `flags`, Arm `Features`)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def host_cores() -> int:
    """Physical cores available to this process: what TVM's thread pool will use."""
    import psutil

    physical = psutil.cpu_count(logical=False) or 1
    return max(1, min(physical, len(os.sched_getaffinity(0))))


def _parse(path: Path) -> Preset:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TvmflowError(f"cannot read target preset {path}: {exc}") from exc
    build = data.get("build", {})
    known = {"description", "target", "device", "arch", "cpu_features", "build", "select_best_of"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TvmflowError(f"{path}: unknown keys {unknown}; valid keys are {sorted(known)}")
    _check_types(path, data)
    preset = Preset(
        name=path.stem,
        description=str(data.get("description", "")),
        target=dict(data.get("target", {})),
        device=str(data.get("device", "cpu")),
        arch=str(data.get("arch", "x86_64")),
        cpu_features=tuple(data.get("cpu_features", ())),
        cross_compiler=build.get("cross_compiler"),
        needs=tuple(build.get("needs", ())),
        select_best_of=tuple(data.get("select_best_of", ())),
    )
    if not preset.is_alias:
        if preset.device not in DEVICES:
            raise TvmflowError(f"{path}: device must be one of {DEVICES}, not {preset.device!r}")
        if "kind" not in preset.target:
            raise TvmflowError(f'{path}: [target] needs a `kind` (e.g. kind = "llvm")')
    return preset


_KEY_TYPES: dict[str, tuple[type, str]] = {
    "description": (str, 'a string: description = "..."'),
    "target": (dict, 'a table: [target] with kind = "llvm" (and mtriple, mcpu, ...)'),
    "device": (str, f"one of {DEVICES}"),
    "arch": (str, 'a machine name: arch = "x86_64" or "aarch64"'),
    "cpu_features": (list, 'a list of CPU flags: cpu_features = ["avx2", "fma"]'),
    "build": (dict, 'a table: [build] with cross_compiler = "..." or needs = ["nvcc"]'),
    "select_best_of": (list, 'a list of preset names: select_best_of = ["x86-avx2"]'),
}


def _check_types(path: Path, data: dict[str, Any]) -> None:
    """A preset file's keys must have the types tvmflow reads them as (one line per mistake)."""
    for key, value in data.items():
        kind, expected = _KEY_TYPES[key]
        if not isinstance(value, kind):
            raise TvmflowError(f"{path}: `{key}` must be {expected}, not {value!r}")


def check_target(preset: Preset) -> None:
    """Refuse a preset TVM cannot generate code for, before a build: an `mcpu` LLVM does not
    know (LLVM would only warn and silently emit generic code; checked first, as creating the
    Target prints that warning) or an invalid target dict."""
    import tvm
    from tvm.target import codegen

    for table in (preset.target, preset.target.get("host")):
        if not isinstance(table, dict) or table.get("kind") != "llvm" or "mcpu" not in table:
            continue
        cpu = str(table["mcpu"])
        triple = str(table.get("mtriple") or codegen.llvm_get_system_triple())
        if not codegen.llvm_is_valid_cpu(cpu, triple):
            known = codegen.llvm_get_cpu_archlist(tvm.target.Target({**table, "mcpu": "generic"}))
            close = difflib.get_close_matches(cpu, [str(k) for k in known], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise TvmflowError(
                f"target preset {preset.name!r}: mcpu {cpu!r} is not a CPU LLVM knows for "
                f"{triple}{hint}; fix mcpu (LLVM would silently build generic code)"
            )
    try:
        tvm.target.Target(preset.target)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TvmflowError(
            f"target preset {preset.name!r} has an invalid [target]: {first}; fix the preset "
            "(`tvmflow targets --json` shows working examples)"
        ) from exc


@cache
def builtin_presets() -> dict[str, Preset]:
    """All presets shipped in `targets/`, by name."""
    presets: dict[str, Preset] = {}
    for path in sorted(PRESETS_DIR.glob("*.toml")):
        preset = _parse(path)
        if preset.name in presets:  # pragma: no cover - file names are unique
            raise TvmflowError(f"duplicate target preset {preset.name!r} in {PRESETS_DIR}")
        presets[preset.name] = preset
    return presets


def resolve_preset(name_or_path: str) -> Preset:
    """A concrete preset from a built-in name or a `.toml` path; aliases pick for this host."""
    presets = builtin_presets()
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise TvmflowError(f"target file {path} does not exist")
        preset = _parse(path)
    elif name_or_path in presets:
        preset = presets[name_or_path]
    else:
        raise TvmflowError(
            f"unknown target {name_or_path!r}; valid names: {', '.join(sorted(presets))} "
            "(or a path to a .toml preset)"
        )
    if preset.is_alias:
        preset = _select_for_host(preset, presets)
    if preset.device == "cpu" and preset.runs_on_host() and "num-cores" not in preset.target:
        preset = replace(preset, target={**preset.target, "num-cores": host_cores()})
    return preset


def _select_for_host(alias: Preset, presets: dict[str, Preset]) -> Preset:
    for candidate in alias.select_best_of:
        if candidate not in presets:
            raise TvmflowError(f"preset {alias.name!r} names unknown preset {candidate!r}")
        if presets[candidate].runs_on_host():
            return presets[candidate]
    raise TvmflowError(
        f"target {alias.name!r} picks the best of {', '.join(alias.select_best_of)} for this "
        "host, but this host runs none of them; name a preset explicitly"
    )


CUDA_STANDARD_HOME = Path("/usr/local/cuda")


def _cuda_home_env() -> tuple[str, str] | None:
    """The toolkit the user named: (variable, value) of CUDA_HOME, else CUDA_PATH."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return var, os.environ[var]
    return None


def find_tool(name: str) -> Path | None:
    """Locate a build tool on PATH. nvcc: from $CUDA_HOME (or $CUDA_PATH) when set, and only
    there (an explicit toolkit choice is never silently replaced), else PATH, else CUDA's
    standard place."""
    if name == "nvcc":
        named = _cuda_home_env()
        if named is not None:
            nvcc = Path(named[1]) / "bin" / "nvcc"
            return nvcc if nvcc.is_file() else None
        found = shutil.which(name)
        standard = CUDA_STANDARD_HOME / "bin" / "nvcc"
        return Path(found) if found else (standard if standard.is_file() else None)
    found = shutil.which(name)
    return Path(found) if found else None


def require_tool(name: str, needed_by: str) -> Path:
    """`find_tool`, or a one-line error saying where it looked and what to set."""
    found = find_tool(name)
    if found is not None:
        return found
    if name != "nvcc":
        raise TvmflowError(f"{needed_by} needs {name}, which is not on PATH; install it")
    named = _cuda_home_env()
    where = (
        f"{named[0]}={named[1]} has no bin/nvcc"
        if named
        else f"nvcc is not on PATH and not in {CUDA_STANDARD_HOME}/bin"
    )
    raise TvmflowError(
        f"{needed_by} needs nvcc, but {where}: install the CUDA toolkit and set CUDA_HOME to "
        "its directory (the one holding bin/nvcc)"
    )


def check_build_tools(preset: Preset) -> None:
    """Fail early, before a build: a target TVM cannot build for, or missing build tools
    (with the install hint)."""
    check_target(preset)
    if preset.cross_compiler and find_tool(preset.cross_compiler) is None:
        raise TvmflowError(
            f"target {preset.name!r} needs the cross compiler {preset.cross_compiler}, which is "
            "not on PATH; install it with "
            "`apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross`"
        )
    for tool in preset.needs:
        require_tool(tool, f"target {preset.name!r}")
