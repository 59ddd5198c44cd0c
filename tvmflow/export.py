"""Build and export for a preset: the one place that knows how each kind of target is built.

`compile` (whole models) and `tune` (candidate kernels, in MetaSchedule's builder workers) both
build here, so a tuned kernel is measured as the artifact will run it: CPU code linked by the
host or the preset's cross compiler; CUDA kernels kept as source by codegen and compiled by
nvcc for the preset's architecture at export (`tvmflow.cuda`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvmflow import cuda
from tvmflow.targets import Preset

if TYPE_CHECKING:
    import tvm


def codegen_scope(target: tvm.target.Target) -> contextlib.AbstractContextManager[None]:
    """Wrap `relax.build` / `tvm.build` in this: CUDA codegen then keeps source for nvcc."""
    return cuda.source_codegen() if target.kind.name == "cuda" else contextlib.nullcontext()


def export_library(module: Any, preset: Preset, target: tvm.target.Target, path: Path) -> None:
    """Write a built module (a Relax executable or a runtime module) as a shared library."""
    if preset.device == "cuda":
        module.export_library(str(path), fpack_imports=cuda.pack_imports(target))
    elif preset.cross_compiler:
        from tvm.support import cc

        module.export_library(str(path), fcompile=cc.cross_compiler(preset.cross_compiler))
    else:
        module.export_library(str(path))
