"""The library's front door: `tvmflow.compile(...)` and `tvmflow.tune(...)`, one call each.

They mirror the CLI (same arguments, same defaults, same checks) and build the options objects
the stages take. `tvmflow.compile` and `tvmflow.tune` are the stage modules themselves, made
callable (`callable_module`), so `import tvmflow.compile` keeps working and `import tvmflow`
stays light: nothing here imports TVM or onnx until a call asks for it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tvmflow.accuracy import Tolerance
    from tvmflow.compile import Artifact
    from tvmflow.frontend import ImportedModel
    from tvmflow.targets import Preset
    from tvmflow.tune import ProgressSink, TuningResult

Shapes = Mapping[str, Sequence[int]]
Freeze = Mapping[str, Any]  # input name -> value (a number, a list, an array or "1,2,3")


def compile(
    model: str | Path | ImportedModel,
    target: str | Preset = "x86",
    *,
    output: str | Path,
    input_shapes: Shapes | None = None,
    freeze: Freeze | None = None,
    tuning_logs: Sequence[str | Path] = (),
    use_shipped_logs: bool = True,
    precision: str = "fp32",
    verify: bool = True,
    tolerance: Tolerance | None = None,
    threads: int | None = None,
) -> Artifact:
    """Compile an ONNX model (a path, or a `load_onnx` result) for a target preset into
    `output` (model.so, weights.npz, manifest.json), verified against onnxruntime unless
    `verify=False`. `freeze` bakes inputs in as constants (the artifact no longer takes them).
    `threads` builds a CPU artifact for that many runtime threads (1: serial kernels)."""
    from tvmflow.accuracy import Tolerance
    from tvmflow.compile import CompileOptions, check_output_dir, compile_model

    options = CompileOptions(
        tuning_logs=tuple(Path(p) for p in tuning_logs),
        use_shipped_logs=use_shipped_logs,
        verify=verify,
        tolerance=tolerance or Tolerance(),
        precision=precision,
    )
    check_output_dir(Path(output))  # the cheap checks first: nothing is loaded yet
    preset = _preset(target).for_threads(threads)
    return compile_model(_model(model, input_shapes, freeze), preset, Path(output), options)


def tune(
    model: str | Path | ImportedModel,
    target: str | Preset = "x86",
    *,
    log: str | Path,
    input_shapes: Shapes | None = None,
    freeze: Freeze | None = None,
    trials: int | None = None,
    trials_per_task: int | None = None,
    time_limit_s: float | None = None,
    precision: str = "fp32",
    seed: int | None = None,
    batch_size: int = 64,
    population: int = 512,
    repair_log: bool = False,
    tasks: tuple[int, int] = (1, 1),
    rpc_tracker: tuple[str, int] | None = None,
    rpc_key: str | None = None,
    progress: ProgressSink | None = None,
) -> TuningResult:
    """Tune a model's kernels for a target into the log directory `log` (created, or resumed);
    `tvmflow.compile(..., tuning_logs=[log])` then uses the records that beat the default.

    `tasks=(i, N)` tunes share i of N of the kernels (`tvmflow logs merge` joins the logs);
    `rpc_tracker=(host, port)` with `rpc_key` measures on an RPC device farm; `progress`
    receives the job's events (the CLI passes a console table)."""
    from tvmflow.errors import TvmflowError
    from tvmflow.farm import Farm, Tracker
    from tvmflow.tune import TuneOptions, tune_model

    if (rpc_tracker is None) != (rpc_key is None):
        raise TvmflowError(
            "--rpc-tracker and --rpc-key go together: give both to measure on a device farm "
            "(rpc_tracker= and rpc_key= in tvmflow.tune), or neither"
        )
    options = TuneOptions(
        trials=trials,
        trials_per_task=trials_per_task,
        time_limit_s=time_limit_s,
        split=tasks,
        farm=None if rpc_tracker is None else Farm(Tracker(*rpc_tracker), str(rpc_key)),
        seed=seed,
        precision=precision,
        batch_size=batch_size,
        population=population,
        repair_log=repair_log,
    )
    imported = _model(model, input_shapes, freeze)
    return tune_model(imported, _preset(target), Path(log), options, progress)


def _model(
    model: str | Path | ImportedModel, input_shapes: Shapes | None, freeze: Freeze | None
) -> ImportedModel:
    from tvmflow.frontend import ImportedModel, load_onnx

    if isinstance(model, ImportedModel):
        if input_shapes or freeze:
            raise TypeError(
                "input_shapes and freeze are for a model path; this model is already loaded"
            )
        return model
    return load_onnx(Path(model), input_shapes, freeze)


def _preset(target: str | Preset) -> Preset:
    from tvmflow.targets import Preset, resolve_preset

    return target if isinstance(target, Preset) else resolve_preset(target)


def callable_module(name: str, function: Callable[..., Any]) -> None:
    """Make module `name` callable as `function`: `tvmflow.compile` is both the compile stage's
    module and the one-call front door, without a second name for either."""

    class CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

    CallableModule.__call__.__doc__ = function.__doc__
    sys.modules[name].__class__ = CallableModule
