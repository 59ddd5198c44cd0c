"""tvmflow: ONNX models → tuned, verified TVM shared libraries for named hardware targets.

The front door is one call per step, mirroring the CLI:

    artifact = tvmflow.compile("model.onnx", "x86", output="out")   # → Artifact
    result = tvmflow.tune("model.onnx", "x86", log="logs/m")         # → TuningResult
    model = tvmflow.load("out")                                      # → CompiledModel

Heavy modules are imported on first use, so `import tvmflow` on a production host never loads
TVM's compiler or onnx; `tvmflow.load` loads TVM's runtime library only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tvmflow.errors import TvmflowError  # light: production code catches it around `load`

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tvmflow.api import compile, tune
    from tvmflow.runtime import CompiledModel, load

__all__ = ["CompiledModel", "TvmflowError", "__version__", "compile", "load", "tune"]


def __getattr__(name: str) -> Any:
    if name in ("load", "CompiledModel"):
        from tvmflow import runtime

        return getattr(runtime, name)
    if name in ("compile", "tune"):  # the stage module, callable as its front door
        return importlib.import_module(f"tvmflow.{name}")
    raise AttributeError(f"module 'tvmflow' has no attribute {name!r}")
