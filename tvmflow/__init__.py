"""tvmflow: ONNX models → tuned, verified TVM shared libraries for named hardware targets.

The flow is one-way: `load_onnx` gives an ImportedModel, `compile_model` turns it and a
target Preset into an Artifact directory, `load` turns that directory into a CompiledModel
(importing only TVM's runtime), and `bench` compares a CompiledModel with onnxruntime.
Heavy modules are imported on first use so that `import tvmflow` on a production host
never loads TVM's compiler or onnx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tvmflow.errors import TvmflowError  # light: production code catches it around `load`

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tvmflow.runtime import CompiledModel, load

__all__ = ["CompiledModel", "TvmflowError", "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name in ("load", "CompiledModel"):
        from tvmflow import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'tvmflow' has no attribute {name!r}")
