"""Compile: an imported ONNX model + a target preset → an artifact directory.

The artifact is `model.so` (weights embedded: one file to ship) and `manifest.json`. Files
are written to a scratch folder inside the output directory and moved into place only once
the library is built and verified against onnxruntime (when this machine can run it, natively
or under emulation: `tvmflow.emulate.host_runner`), so a failed or killed compile never leaves
a half-written or unverified artifact behind.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tvmflow import __version__, cuda
from tvmflow.accuracy import (
    Tolerance,
    compare,
    onnxruntime_outputs,
    output_scales,
    tolerance_for,
)
from tvmflow.emulate import HostRunner, host_runner
from tvmflow.errors import AccuracyError, TvmflowError
from tvmflow.export import codegen_scope, export_library
from tvmflow.frontend import ImportedModel, to_relax
from tvmflow.inputs import random_inputs
from tvmflow.manifest import (
    LIBRARY_NAME,
    Manifest,
    OutputAccuracy,
    TensorSpec,
    sha256_file,
    write_manifest,
)
from tvmflow.passes import PRECISIONS, fuse, kernel_names
from tvmflow.schedules import apply_default_schedules
from tvmflow.targets import Preset, check_build_tools
from tvmflow.tune import apply_records
from tvmflow.tunelog import check_log_dir, log_matches_target, log_target, shipped_log_dirs

if TYPE_CHECKING:
    import tvm
    from tvm import relax

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Artifact:
    """A compiled, self-describing artifact directory."""

    directory: Path
    manifest: Manifest

    @property
    def library(self) -> Path:
        return self.directory / LIBRARY_NAME


def compile_model(
    model: ImportedModel, preset: Preset, out_dir: Path, options: CompileOptions | None = None
) -> Artifact:
    """Build, export, verify and write an artifact; returns it once it is in place."""
    import tvm

    options = options or CompileOptions()
    _require_compiler()
    check_build_tools(preset)
    _check_precision(preset, options.precision)
    start = time.perf_counter()
    target = tvm.target.Target(preset.target)
    mod = to_relax(model)
    outputs = _output_specs(mod, model)
    mod = fuse(mod, target, options.precision)
    total = len(kernel_names(mod))
    mod, tuning = apply_records(mod, target, _log_dirs(preset, options), total)
    mod = apply_default_schedules(mod, target)
    executable = _build(mod, target)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as scratch:
        library = Path(scratch) / LIBRARY_NAME
        export_library(executable, preset, target, library)
        manifest = Manifest(
            tvmflow_version=__version__,
            tvm_version=tvm.__version__,
            preset=preset.name,
            target=dict(preset.target),
            device=preset.device,
            arch=preset.arch,
            cpu_features=preset.cpu_features,
            inputs=model.inputs,
            outputs=outputs,
            library_sha256=sha256_file(library),
            onnx_sha256=model.sha256,
            tuning=tuning,
            compile_seconds=round(time.perf_counter() - start, 3),
            precision=options.precision,
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
        # library first, manifest last: a manifest only ever describes a complete library
        library.replace(out_dir / LIBRARY_NAME)
        (Path(scratch) / "manifest.json").replace(out_dir / "manifest.json")
    return Artifact(out_dir, manifest)


def _require_compiler() -> None:
    import tvm.base

    if tvm.base._RUNTIME_ONLY:
        raise TvmflowError(
            "TVM was loaded in runtime-only mode in this process (TVM_USE_RUNTIME_LIB=1, or "
            "tvmflow.load ran before compiling); compile in a separate process"
        )


def _output_specs(mod: tvm.IRModule, model: ImportedModel) -> tuple[TensorSpec, ...]:
    """Static output signature from Relax's inferred types, named after the ONNX outputs."""
    from tvm import relax

    ret = mod["main"].ret_ty
    infos = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    names = [o.name for o in model.proto.graph.output]
    specs = []
    for name, info in zip(names, infos, strict=True):
        if not isinstance(info, relax.TensorType) or info.shape is None:
            raise TvmflowError(f"output {name!r} is not a tensor of known rank; cannot compile")
        try:
            shape = tuple(int(d) for d in info.shape.values)
        except TypeError as exc:
            raise TvmflowError(
                f"output {name!r} has a data-dependent shape {info.shape}; tvmflow compiles "
                "static shapes only"
            ) from exc
        specs.append(TensorSpec(name, shape, str(info.dtype)))
    return tuple(specs)


def _log_dirs(preset: Preset, options: CompileOptions) -> list[Path]:
    """The user's logs first, then the logs shipped for this preset (records for another
    target would generate code this target may not run: a user's is refused, a shipped one
    skipped)."""
    dirs = [check_log_dir(Path(d)) for d in options.tuning_logs]
    for d in dirs:
        if not log_matches_target(d, preset.target):
            raise TvmflowError(
                f"tuning log {d} was tuned for target {log_target(d)}, not {preset.name} "
                f"{preset.target}; tune for this target or drop --tuning-log {d}"
            )
    if options.use_shipped_logs:
        dirs += [
            d
            for d in shipped_log_dirs(preset.name)
            if d not in dirs and log_matches_target(d, preset.target)
        ]
    return dirs


def _check_precision(preset: Preset, precision: str) -> None:
    if precision not in PRECISIONS:
        raise TvmflowError(
            f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}"
        )
    if precision != "fp32" and preset.device != "cuda":
        raise TvmflowError(
            f"--precision {precision} is for CUDA targets; {preset.name} is a {preset.device} "
            "target, where fp16 arithmetic is emulated and slower: use --precision fp32"
        )


def _build(mod: tvm.IRModule, target: tvm.target.Target) -> relax.VMExecutable:
    from tvm import relax

    with codegen_scope(target):
        return relax.build(mod, target=target)


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
    if preset.device == "cuda":
        return None, cuda.why_not_runnable(str(preset.target["arch"])) or "not checked"
    emulable = preset.arch == "aarch64"
    hint = " (run scripts/arm-sysroot to check it under emulation)" if emulable else ""
    missing = ", ".join(preset.missing_host_features())
    return None, f"not checked: this machine cannot run it (needs {missing}){hint}"


def _verify(
    directory: Path, model: ImportedModel, options: CompileOptions, runner: HostRunner
) -> tuple[OutputAccuracy, ...]:
    """Run the exported library through the production loader and compare with onnxruntime.

    It runs twice: the second run gets memory the first one freed, so a kernel that reads
    memory it never wrote gives different outputs (the first run often gets fresh, zeroed
    pages and matches by luck)."""
    tolerance = tolerance_for(options.precision, options.tolerance)
    feeds = random_inputs(model.inputs, options.seed)
    expected = onnxruntime_outputs(model.path, feeds)
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
    accuracy = compare(actual, expected)
    scales = output_scales(expected)
    bad = [a for a in accuracy if not tolerance.passes(a, scales[a.name])]
    if bad:
        detail = ", ".join(
            f"{a.name}: max abs err {a.max_abs_err:.3g} (rel {a.max_rel_err:.3g})" for a in bad
        )
        raise AccuracyError(
            f"compiled model disagrees with onnxruntime beyond tolerance (atol "
            f"{tolerance.atol}, rtol {tolerance.rtol}): {detail}; nothing was "
            "written (use --no-verify to write it anyway)"
        )
    return accuracy
