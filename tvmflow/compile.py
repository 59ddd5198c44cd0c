"""Compile: an imported ONNX model + a target preset → an artifact directory.

The artifact is `model.so` (the code), `weights.npz` (every weight once, mapped by the
loader: `tvmflow.weights`) and `manifest.json` (their sha256 and the rest). Files
are written to a scratch folder inside the output directory and moved into place only once
the library is built and verified against onnxruntime (when this machine can run it, natively
or under emulation: `tvmflow.emulate.host_runner`), so a failed or killed compile never leaves
a half-written or unverified artifact behind.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tvmflow import __version__, api, cuda, weights
from tvmflow.accuracy import (
    Tolerance,
    compare,
    onnxruntime_outputs,
    output_scales,
    quant_allowance,
    ranked_outputs,
    tolerance_for,
)
from tvmflow.api import callable_module
from tvmflow.emulate import HostRunner, host_runner
from tvmflow.errors import AccuracyError, RuntimeLibraryError, TvmflowError
from tvmflow.export import export_library
from tvmflow.frontend import ImportedModel
from tvmflow.inputs import random_inputs
from tvmflow.lowering import LoweringOptions, build, lower
from tvmflow.manifest import (
    LIBRARY_NAME,
    MANIFEST_NAME,
    Manifest,
    OutputAccuracy,
    WeightsInfo,
    check_writable,
    sha256_file,
    write_manifest,
)
from tvmflow.targets import Preset, check_build_tools

if TYPE_CHECKING:
    from tvm import relax

log = logging.getLogger(__name__)

SCRATCH_PREFIX = ".build-"  # where a compile writes before moving files into the output
STALE_SCRATCH_S = 6 * 3600  # older scratch folders are a killed compile's, not a running one's


@dataclass(frozen=True)
class CompileOptions:
    """How to build: which tuning records to use, the precision, whether to check the result.

    `precision="fp16"` (CUDA presets only) computes in fp16 with fp32 accumulation; inputs
    and outputs stay fp32. Its accuracy check is never tighter than `FP16_TOLERANCE`.
    """

    tuning_logs: tuple[Path, ...] = ()
    use_shipped_logs: bool = True
    verify: bool = True
    tolerance: Tolerance = field(default_factory=Tolerance)
    seed: int = 0
    precision: str = "fp32"

    @property
    def lowering(self) -> LoweringOptions:
        return LoweringOptions(self.precision, self.tuning_logs, self.use_shipped_logs)


@dataclass(frozen=True)
class Artifact:
    """A compiled, self-describing artifact directory."""

    directory: Path
    manifest: Manifest

    @property
    def library(self) -> Path:
        return self.directory / LIBRARY_NAME


def compile_model(
    model: ImportedModel,
    preset: Preset,
    out_dir: Path,
    options: CompileOptions | None = None,
    on_lowered: Callable[[Any], None] | None = None,
) -> Artifact:
    """Build, export, verify and write an artifact; returns it once it is in place.
    `on_lowered` sees the lowered module (`lowering.Lowered`) before codegen: its kernels
    carry the names the library calls (scripts/levers classifies them)."""
    import tvm

    options = options or CompileOptions()
    check_output_dir(Path(out_dir))
    _require_compiler()
    check_build_tools(preset)
    start = time.perf_counter()
    target = tvm.target.Target(preset.target)
    lowered = lower(model, preset, options.lowering)
    if on_lowered is not None:
        on_lowered(lowered)
    executable = build(lowered.mod, target)
    if target.kind.name == "llvm":  # CUDA artifacts also load TVM's CUDA runtime library
        check_runtime_functions(executable)

    out_dir = Path(out_dir)
    with (
        _removed_on_failure(out_dir),
        tempfile.TemporaryDirectory(dir=out_dir, prefix=SCRATCH_PREFIX) as scratch,
    ):
        library = Path(scratch) / LIBRARY_NAME
        export_library(executable, preset, target, library)
        weights_file = Path(scratch) / weights.WEIGHTS_NAME
        raw_dtypes = weights.save(weights_file, lowered.weights)
        manifest = Manifest(
            tvmflow_version=__version__,
            tvm_version=tvm.__version__,
            preset=preset.name,
            target=dict(preset.target),
            device=preset.device,
            arch=preset.arch,
            cpu_features=preset.cpu_features,
            inputs=model.inputs,
            outputs=lowered.outputs,
            library_sha256=sha256_file(library),
            onnx_sha256=model.sha256,
            tuning=lowered.tuning,
            compile_seconds=round(time.perf_counter() - start, 3),
            precision=options.precision,
            weights=WeightsInfo(
                file=weights.WEIGHTS_NAME,
                sha256=sha256_file(weights_file),
                count=len(lowered.weights),
                bytes=sum(w.nbytes for w in lowered.weights),
                raw_dtypes=raw_dtypes,
            ),
            frozen=model.frozen,
            extra=_device_code_info(library, preset),
        )
        write_manifest(Path(scratch), manifest)
        runner, note = _verifier(preset, options)
        if runner is not None:
            accuracy = _verify(Path(scratch), model, options, runner)
            extra = {**manifest.extra, "verified_with": runner.description}
            manifest = replace(manifest, accuracy=accuracy, extra=extra)
        else:
            manifest = replace(manifest, extra={**manifest.extra, "accuracy_note": note})
        write_manifest(Path(scratch), manifest)
        # weights and library first, manifest last: a manifest only ever describes complete files
        weights_file.replace(out_dir / weights.WEIGHTS_NAME)
        library.replace(out_dir / LIBRARY_NAME)
        (Path(scratch) / "manifest.json").replace(out_dir / "manifest.json")
    return Artifact(out_dir, manifest)


def check_output_dir(out_dir: Path) -> None:
    """Refuse, before any build, an output that cannot take an artifact: a file, a directory
    that is not writable, or a non-empty directory that is not an artifact (its files would be
    overwritten). An existing artifact is replaced; a killed compile's scratch is cleared."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TvmflowError(f"-o {out_dir} is a file; pass a directory for the artifact")
    if out_dir.is_dir():
        for scratch in out_dir.glob(f"{SCRATCH_PREFIX}*"):
            # a scratch folder lives minutes (export and check); an old one is a killed compile's
            if time.time() - scratch.stat().st_mtime > STALE_SCRATCH_S:
                shutil.rmtree(scratch, ignore_errors=True)
        entries = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(SCRATCH_PREFIX))
        if entries and not _is_artifact(out_dir):
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise TvmflowError(
                f"-o {out_dir} is not empty and not a tvmflow artifact (it holds {shown}); "
                "pass a new or empty directory (an existing artifact is replaced)"
            )
    check_writable(out_dir, "-o")


def _is_artifact(directory: Path) -> bool:
    """A tvmflow manifest of any format version is there (replacing an old artifact is fine)."""
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"format_version", "tvmflow_version"} <= data.keys()


@contextlib.contextmanager
def _removed_on_failure(out_dir: Path) -> Iterator[None]:
    """Create `out_dir` (and its missing parents); remove what was created if the build fails,
    so a failed compile leaves nothing behind."""
    created = [p for p in (out_dir, *out_dir.absolute().parents) if not p.exists()]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for path in created:  # deepest first; only what is still empty
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def _require_compiler() -> None:
    import tvm.base

    if tvm.base._RUNTIME_ONLY:
        raise TvmflowError(
            "TVM was loaded in runtime-only mode in this process (TVM_USE_RUNTIME_LIB=1, or "
            "tvmflow.load ran before compiling); compile in a separate process"
        )


def _device_code_info(library: Path, preset: Preset) -> dict[str, Any]:
    """What device code the library carries (CUDA: the fatbin images), for the manifest."""
    if preset.device != "cuda":
        return {}
    return {"device_code": cuda.describe_device_code(library)}


def _verifier(preset: Preset, options: CompileOptions) -> tuple[HostRunner | None, str]:
    """How this machine can run the artifact to check it, or why it cannot."""
    if not options.verify:
        return None, "not checked: --no-verify"
    runner = host_runner(preset)
    if runner is not None:
        return runner, ""
    emulable = preset.arch == "aarch64"
    hint = " (run scripts/arm-sysroot to check it under emulation)" if emulable else ""
    return None, f"not checked: this machine cannot run it (it {preset.host_mismatch()}){hint}"


def _verify(
    directory: Path, model: ImportedModel, options: CompileOptions, runner: HostRunner
) -> tuple[OutputAccuracy, ...]:
    """Run the exported library through the production loader and compare with onnxruntime.

    It runs twice: the second run gets memory the first one freed, so a kernel that reads
    memory it never wrote gives different outputs (the first run often gets fresh, zeroed
    pages and matches by luck)."""
    feeds = random_inputs(model.inputs, options.seed)
    reference_feeds = model.reference_feeds(feeds)
    expected = onnxruntime_outputs(model.path, reference_feeds)
    tolerance = tolerance_for(options.precision, options.tolerance, expected)
    first = runner.run(directory, feeds)
    actual = runner.run(directory, feeds)
    unstable = [
        name for name in actual if not np.array_equal(first[name], actual[name], equal_nan=True)
    ]
    if unstable:
        raise AccuracyError(
            f"compiled model gives different outputs on two runs of the same inputs "
            f"({', '.join(unstable)}): some kernel reads memory it never wrote; nothing was "
            "written (use --no-verify to write it anyway)"
        )
    accuracy = compare(
        actual,
        expected,
        quant_allowance(model.path, reference_feeds, expected),
        ranked_outputs(model.path),
    )
    scales = output_scales(expected)
    bad = [a for a in accuracy if not tolerance.passes(a, scales[a.name])]
    if bad:
        detail = ", ".join(
            f"{a.name}: max abs err {a.max_abs_err:.3g} (rel {a.max_rel_err:.3g}, allowed "
            f"{tolerance.allowed(a, scales[a.name]):.3g}"
            + (
                f" with {a.quant_steps} x quantization step {a.quant_step:.3g}"
                if a.quant_step
                else ""
            )
            + ")"
            for a in bad
        )
        raise AccuracyError(
            f"compiled model disagrees with onnxruntime beyond tolerance (atol "
            f"{tolerance.atol}, rtol {tolerance.rtol}): {detail}; nothing was "
            "written (use --no-verify to write it anyway)"
        )
    return accuracy


callable_module(__name__, api.compile)  # tvmflow.compile(model, target, output=...)


_PACKED = re.compile(r"@(\S+) packed_func;")

_RUNTIME_FUNCTIONS_PROBE = """
import json, tvm_ffi
from tvmflow.runtime import load_runtime_library
load_runtime_library()
print(json.dumps(sorted(tvm_ffi.registry.list_global_func_names())))
"""


@functools.cache
def runtime_functions() -> frozenset[str]:
    """The global functions `libtvm_runtime.so` registers: read in a process of its own,
    since in this one TVM's compiler has registered its functions too."""
    proc = subprocess.run(
        [sys.executable, "-c", _RUNTIME_FUNCTIONS_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return frozenset(json.loads(proc.stdout.strip().splitlines()[-1]))


def check_runtime_functions(executable: relax.VMExecutable) -> None:
    """Refuse a build whose VM calls a function neither its own library nor TVM's runtime
    library has, only TVM's compiler (TVM lowers a few ops, Unique among them, to such
    calls): verified here, it would fail to load in production ("Cannot find
    ffi::Function")."""
    needed = set(_PACKED.findall(executable.as_text()))
    library = executable.mod
    own = {name for name in needed if library.implements_function(name, True)}
    missing = sorted(needed - own - runtime_functions())
    if missing:
        raise RuntimeLibraryError(
            f"the compiled model calls {', '.join(missing)}, which TVM's runtime library "
            "lacks (only its compiler has it), so the artifact could not be loaded"
        )
