"""The `tvmflow` command: a thin click layer that builds options objects and calls the library.

This is the only module that knows click. Errors are mapped to exit codes in one place,
`main`: a user's mistake (TvmflowError, bad flags) is one line on stderr and exit 2, an
accuracy failure exit 1, anything unexpected exit 1; `--debug` adds the traceback.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import click
import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.lowering import PRECISIONS


class ShapeParam(click.ParamType):
    """`NAME=D1,D2,...` → (name, dims)."""

    name = "NAME=D1,D2,..."

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, tuple[int, ...]]:
        if isinstance(value, tuple):
            return value
        name, sep, dims = str(value).partition("=")
        try:  # NAME= (no dims): a rank-0 (scalar) input
            shape = tuple(int(d) for d in dims.split(",")) if dims.strip() else ()
            bad = any(d <= 0 for d in shape)
        except ValueError:
            bad = True
        if not sep or not name or bad:
            self.fail(
                f"{value!r} is not NAME=D1,D2,... with positive integer dims (NAME= for a scalar)",
                param,
                ctx,
            )
        return name, shape


class NamedFileParam(click.ParamType):
    """`NAME=FILE.npy` → (name, path)."""

    name = "NAME=FILE.npy"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, Path]:
        if isinstance(value, tuple):
            return value
        name, sep, path = str(value).partition("=")
        if not sep or not name or not path:
            self.fail(f"{value!r} is not NAME=FILE.npy", param, ctx)
        if not Path(path).is_file():
            self.fail(f"input file {path} does not exist", param, ctx)
        return name, Path(path)


def _one_per_input(
    ctx: click.Context, param: click.Parameter, value: Sequence[tuple[str, Any]]
) -> dict[str, Any]:
    """Repeated NAME=... flags as a dict; naming one input twice is refused (the last would
    silently win)."""

    def text(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)

    given: dict[str, Any] = {}
    for name, item in value:
        if name in given:
            raise click.BadParameter(
                f"input {name!r} is given twice ({text(given[name])} and {text(item)}); give "
                "each input once",
                ctx,
                param,
            )
        given[name] = item
    return given


class FreezeParam(click.ParamType):
    """`NAME=VALUE[,VALUE...]` → (name, text); the model's dtype parses the values later."""

    name = "NAME=VALUE"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        name, sep, text = str(value).partition("=")
        if not sep or not name or not text.strip():
            self.fail(f"{value!r} is not NAME=VALUE (e.g. sr=16000)", param, ctx)
        return name, text


SEED = click.IntRange(0, 2**31 - 1)
SHAPE = ShapeParam()
NAMED_FILE = NamedFileParam()
input_shape_option = click.option(
    "--input-shape",
    "input_shapes",
    type=SHAPE,
    multiple=True,
    callback=_one_per_input,
    help="Fix an input's shape, e.g. x=1,3,224,224; sr= for a scalar (repeatable; needed "
    "for dynamic dims).",
)
freeze_option = click.option(
    "--freeze",
    type=FreezeParam(),
    multiple=True,
    callback=_one_per_input,
    help="Bake an input in as a constant, e.g. sr=16000 (comma-separated for a vector; "
    "repeatable): branches on it fold away and the artifact no longer takes it.",
)
target_option = click.option(
    "--target", "-t", required=True, help="Preset name (see `tvmflow targets`) or a .toml path."
)


def tolerance_options(f: Any) -> Any:
    """--atol/--rtol, shared by the commands that judge accuracy against onnxruntime."""
    f = click.option(
        "--rtol",
        type=float,
        default=1e-3,
        show_default=True,
        help="Tolerance relative to the output's largest magnitude.",
    )(f)
    return click.option("--atol", type=float, default=1e-4, show_default=True)(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="tvmflow")
def cli(debug: bool) -> None:
    """Compile ONNX models into tuned, verified TVM libraries for named targets."""


@cli.command("targets")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def targets_cmd(as_json: bool) -> None:
    """List the target presets."""
    from tvmflow.targets import builtin_presets, resolve_preset

    rows: list[dict[str, Any]] = []
    for name, preset in builtin_presets().items():
        if preset.is_alias:
            try:
                chosen = resolve_preset(name).name
            except TvmflowError:
                chosen = None
            rows.append(
                {
                    "name": name,
                    "description": preset.description,
                    "selects": chosen,
                    "candidates": list(preset.select_best_of),
                }
            )
            continue
        rows.append(
            {
                "name": name,
                "description": preset.description,
                "device": preset.device,
                "arch": preset.arch,
                "target": preset.target,
                "runs_here": preset.runs_on_host(),
                "build_needs": [t for t in (preset.cross_compiler, *preset.needs) if t],
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        if "selects" in row:
            where = f"-> {row['selects'] or 'none on this host'}"
        else:
            where = f"{row['device']}/{row['arch']}" + (" (runs here)" if row["runs_here"] else "")
        click.echo(f"{row['name']:<16} {where:<26} {row['description']}")


@cli.command("compile")
@click.argument("model", type=click.Path(path_type=Path))
@target_option
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Artifact directory to write (model.so, weights.npz, manifest.json).",
)
@input_shape_option
@freeze_option
@click.option(
    "--tuning-log",
    "tuning_logs",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Tuning log directory from `tvmflow tune` (repeatable).",
)
@click.option(
    "--no-shipped-logs", is_flag=True, help="Ignore the tuning logs shipped in tuning_logs/."
)
@click.option("--no-verify", is_flag=True, help="Skip the accuracy check against onnxruntime.")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="fp16: fp16 compute with fp32 accumulation (CUDA targets only). bf16: conv2d/matmul "
    "in bf16 with fp32 accumulation (--target x86-avx512-bf16: CPUs with AVX512_BF16); "
    "checked at atol 2e-2, rtol 3e-2 or looser.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU targets: build for this many runtime threads (default: this host's cores); "
    "1 gives serial kernels, without a thread-pool launch per kernel call.",
)
@tolerance_options
def compile_cmd(
    model: Path,
    target: str,
    output: Path,
    input_shapes: Mapping[str, tuple[int, ...]],
    freeze: Mapping[str, str],
    tuning_logs: Sequence[Path],
    no_shipped_logs: bool,
    no_verify: bool,
    precision: str,
    threads: int | None,
    atol: float,
    rtol: float,
) -> None:
    """Compile MODEL (.onnx) for a target into an artifact directory."""
    from tvmflow import api
    from tvmflow.accuracy import Tolerance, tolerance_for

    artifact = api.compile(
        model,
        target,
        output=output,
        input_shapes=dict(input_shapes),
        freeze=dict(freeze),
        tuning_logs=tuning_logs,
        use_shipped_logs=not no_shipped_logs,
        precision=precision,
        verify=not no_verify,
        tolerance=Tolerance(atol, rtol),
        threads=threads,
    )
    m = artifact.manifest
    click.echo(
        f"compiled {model} for {m.preset} in {m.compile_seconds:.1f}s -> {artifact.directory}"
    )
    click.echo(f"  tuned kernels: {m.tuning.tasks_tuned}/{m.tuning.tasks_total}")
    if m.frozen:
        click.echo(f"  frozen inputs: {' '.join(f.describe() for f in m.frozen)}")
    for acc in m.accuracy or ():
        step = (
            f" (allowed {acc.quant_steps} x quantization step {acc.quant_step:.3g})"
            if acc.quant_step
            else ""
        )
        rows = " (rows compared as a set: tied scores order them either way)" * acc.rows_as_set
        click.echo(
            f"  {acc.name}: max abs err {acc.max_abs_err:.2e}, rel {acc.max_rel_err:.2e}"
            f"{step}{rows}"
        )
    if m.accuracy is None:
        note = m.extra.get("accuracy_note", "not checked")
        click.echo(f"  accuracy: {note}")
    elif "verified_with" in m.extra:
        tol = tolerance_for(m.precision, Tolerance(atol, rtol))
        click.echo(
            f"  accuracy checked: {m.extra['verified_with']} ({m.precision}: atol {tol.atol:g}, "
            f"rtol {tol.rtol:g})"
        )


@cli.command("inspect")
@click.argument("artifact", type=click.Path(path_type=Path))
def inspect_cmd(artifact: Path) -> None:
    """Print an artifact's manifest (does not load the library)."""
    from tvmflow.manifest import read_manifest

    click.echo(json.dumps(read_manifest(artifact).to_json(), indent=2))


@cli.command("run")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--input",
    "input_files",
    type=NAMED_FILE,
    multiple=True,
    callback=_one_per_input,
    help="NAME=FILE.npy",
)
@click.option(
    "--inputs",
    "npz",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="An .npz file holding every input by name.",
)
@click.option("--random", "use_random", is_flag=True, help="Seeded random inputs.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Save outputs as .npz.")
@click.option(
    "--emulate",
    is_flag=True,
    help="Run an aarch64 artifact under qemu in the sysroot of scripts/arm-sysroot.",
)
def run_cmd(
    artifact: Path,
    input_files: Mapping[str, Path],
    npz: Path | None,
    use_random: bool,
    seed: int,
    output: Path | None,
    emulate: bool,
) -> None:
    """Run an artifact on inputs and print (or save) its outputs."""
    from tvmflow.inputs import check_output_file, load_inputs, random_inputs, save_outputs

    if use_random == bool(input_files or npz):
        raise TvmflowError(
            "give either --random or inputs (--input NAME=FILE.npy / --inputs F.npz)"
        )
    if output:
        check_output_file(output)
    run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    if emulate:
        from tvmflow.emulate import run_emulated
        from tvmflow.manifest import read_manifest

        specs = read_manifest(artifact).inputs
        run = functools.partial(run_emulated, artifact)
    else:
        from tvmflow.runtime import load

        model = load(artifact)
        specs, run = model.inputs, model.run
    feeds = random_inputs(specs, seed) if use_random else load_inputs(dict(input_files), npz)
    _warn_nonfinite(feeds)
    start = time.perf_counter()
    outputs = run(feeds)
    elapsed = time.perf_counter() - start
    if output:
        save_outputs(output, outputs)
        click.echo(f"wrote {len(outputs)} output(s) to {output}")
    for name, arr in outputs.items():
        values = (
            f"min {arr.min():.4g} max {arr.max():.4g} mean {arr.mean():.4g}"
            if arr.size
            else "empty"
        )
        click.echo(f"{name}: {arr.dtype}{list(arr.shape)} {values}")
    if emulate:
        click.echo(f"ran under emulation in {elapsed:.1f} s (qemu: says nothing about speed)")
    else:
        click.echo(f"ran in {elapsed * 1e3:.2f} ms (first run)")


def _warn_nonfinite(arrays: Mapping[str, np.ndarray]) -> None:
    """NaN/Inf inputs are legal but almost always a mistake upstream: one line each."""
    from tvmflow.inputs import nonfinite_counts

    for name, count in nonfinite_counts(arrays).items():
        click.echo(
            f"tvmflow: warning: input {name!r} holds {count} NaN/Inf value(s); outputs that "
            "depend on them will be NaN",
            err=True,
        )


@cli.command("demo")
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path(".tvmflow-demo"), show_default=True
)
def demo_cmd(workdir: Path) -> None:
    """Compile the built-in model for this host, run it and compare with onnxruntime."""
    from tvmflow.compile import check_output_dir, compile_model
    from tvmflow.frontend import load_onnx
    from tvmflow.targets import resolve_preset
    from tvmflow.zoo import DEMO_MODEL, DEMO_SHAPES, save

    if workdir.exists() and not workdir.is_dir():
        raise TvmflowError(f"--workdir {workdir} is a file; pass a directory (it is created)")
    check_output_dir(workdir / "artifact")
    path = save(DEMO_MODEL, workdir)
    preset = resolve_preset("x86")
    artifact = compile_model(load_onnx(path, DEMO_SHAPES), preset, workdir / "artifact")
    m = artifact.manifest
    click.echo(f"model     {path} ({', '.join(s.describe() for s in m.inputs)})")
    click.echo(f"target    {m.preset}: {json.dumps(m.target)}")
    click.echo(f"compiled  in {m.compile_seconds:.1f}s -> {artifact.directory}")
    for acc in m.accuracy or ():
        click.echo(
            f"accuracy  {acc.name}: max abs err {acc.max_abs_err:.2e} vs onnxruntime "
            f"(cosine {acc.cosine:.6f})"
        )
    from tvmflow.bench import BenchOptions, run_bench

    quick = BenchOptions(warmup=2, rounds=4, min_time=0.4, measure_rss=False)
    report = run_bench(path, artifact.directory, quick, input_shapes=DEMO_SHAPES)
    ours, theirs, ratio = report.engine("tvmflow"), report.engine("onnxruntime"), report.ratio()
    click.echo(
        f"latency   p50 tvmflow {ours.p50_ms:.3g} ms, onnxruntime {theirs.p50_ms:.3g} ms "
        f"({report.threads} threads): tvmflow/onnxruntime {ratio.p50_ratio:.2f}x "
        f"[{ratio.ci_low:.2f}, {ratio.ci_high:.2f}] (95% CI; `tvmflow bench` for the full report)"
    )


@cli.command("bench")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--artifact",
    type=click.Path(path_type=Path),
    help="Artifact directory compiled from MODEL (or use --target).",
)
@click.option("--target", "-t", help="Compile MODEL for this preset first (or use --artifact).")
@click.option(
    "--tuning-log",
    "tuning_logs",
    type=click.Path(path_type=Path),
    multiple=True,
    help="With --target: tuning log directory (repeatable).",
)
@click.option("--no-shipped-logs", is_flag=True, help="With --target: ignore tuning_logs/.")
@input_shape_option
@freeze_option
@click.option(
    "--inputs",
    "npz",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="An .npz file holding every input by name (default: seeded random inputs).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=os.cpu_count() or 1),  # tvmflow.load's range: checked first
    help="Threads per engine [default: physical cores].",
)
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Interleaved rounds (each engine runs in every round).",
)
@click.option(
    "--min-time",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds of timed calls per engine, spread over the rounds.",
)
@click.option(
    "--compare",
    default="onnxruntime",
    show_default=True,
    help="Engines to compare with, comma-separated: onnxruntime, openvino (f32), "
    "openvino-default (its default precision: bf16 on AVX512_BF16 CPUs).",
)
@tolerance_options
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--no-rss", is_flag=True, help="Skip the peak-RSS probes (one process per engine).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write a JSON report.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write a markdown table.")
@click.option("--plot", type=click.Path(path_type=Path), help="Write a latency chart (.png).")
def bench_cmd(
    model: Path,
    artifact: Path | None,
    target: str | None,
    tuning_logs: Sequence[Path],
    no_shipped_logs: bool,
    input_shapes: Mapping[str, tuple[int, ...]],
    freeze: Mapping[str, str],
    npz: Path | None,
    threads: int | None,
    warmup: int,
    rounds: int,
    min_time: float,
    compare: str,
    atol: float,
    rtol: float,
    seed: int,
    no_rss: bool,
    json_path: Path | None,
    markdown: Path | None,
    plot: Path | None,
) -> None:
    """Benchmark a tvmflow artifact against onnxruntime on identical inputs (exit 3: inaccurate)."""
    import tempfile

    from tvmflow import bench, reporting
    from tvmflow.accuracy import Tolerance
    from tvmflow.inputs import load_inputs
    from tvmflow.manifest import check_writable

    if (artifact is None) == (target is None):
        raise TvmflowError("give exactly one of --artifact DIR or --target NAME")
    if tuning_logs and target is None:
        raise TvmflowError("--tuning-log applies to --target only (an artifact is already built)")
    if freeze and target is None:
        raise TvmflowError(
            "--freeze applies to --target only (an artifact keeps the values it was compiled with)"
        )
    options = bench.BenchOptions(
        threads=threads,
        warmup=warmup,
        rounds=rounds,
        min_time=min_time,
        comparators=tuple(n.strip() for n in compare.split(",") if n.strip()),
        tolerance=Tolerance(atol, rtol),
        measure_rss=not no_rss,
        seed=seed,
        progress=sys.stderr.isatty(),
    )
    for flag, report_path in (("--json", json_path), ("--markdown", markdown), ("--plot", plot)):
        if report_path is not None and report_path.is_dir():
            raise TvmflowError(f"{flag} {report_path} is a directory; pass a file name")
        if report_path is not None:
            check_writable(report_path, flag)
            if report_path.resolve() in {model.resolve(), Path(npz or model).resolve()}:
                raise TvmflowError(f"{flag} {report_path} is an input of this benchmark")
    if plot:
        reporting.plot_format(plot)
    arrays = load_inputs(npz=npz) if npz else None
    _warn_nonfinite(arrays or {})
    with tempfile.TemporaryDirectory(prefix="tvmflow-bench-") as scratch:
        compile_s = None
        if artifact is None:
            artifact, compile_s = bench.compile_for_bench(
                model,
                str(target),
                Path(scratch),
                dict(input_shapes),
                tuning_logs,
                not no_shipped_logs,
                dict(freeze),
                threads=options.threads,
            )
        report = bench.run_bench(
            model, artifact, options, arrays, str(npz), dict(input_shapes), compile_s
        )
    click.echo(reporting.format_table(report))
    writers = ((json_path, reporting.write_json), (markdown, reporting.write_markdown))
    for path, write in writers:
        if path:
            write([report], path)
            click.echo(f"wrote {path}")
    if plot:
        reporting.plot([report], plot)
        click.echo(f"wrote {plot}")
    bench.check_accuracy(report)


class DurationParam(click.ParamType):
    """`90`, `30s`, `45m`, `2h` → seconds."""

    name = "DURATION"
    units: ClassVar[dict[str, float]] = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip().lower()
        number, unit = (text[:-1], text[-1]) if text and text[-1] in "smh" else (text, "")
        try:
            seconds = float(number) * self.units[unit]
        except ValueError:
            seconds = -1.0
        if not (math.isfinite(seconds) and seconds > 0):
            self.fail(f"{value!r} is not a duration like 90, 30s, 45m or 2h", param, ctx)
        return seconds


class SplitParam(click.ParamType):
    """`i/N` → (i, N)."""

    name = "i/N"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        i, sep, n = str(value).partition("/")
        if not (sep and i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
            self.fail(f"{value!r} is not i/N with 1 <= i <= N (e.g. 2/4)", param, ctx)
        return int(i), int(n)


class HostPortParam(click.ParamType):
    """`HOST:PORT` → (host, port)."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        host, sep, port = str(value).rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            self.fail(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9190)", param, ctx)
        return host, int(port)


@cli.command("tune")
@click.argument("model", type=click.Path(path_type=Path))
@target_option
@click.option(
    "--log",
    "log_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Tuning log directory (created; an existing one for this model and target resumes).",
)
@input_shape_option
@freeze_option
@click.option("--trials", type=int, help="Trial budget, counting trials already in the log.")
@click.option("--trials-per-task", type=int, help="Budget per kernel, counting the log's trials.")
@click.option(
    "--time-limit", type=DurationParam(), help="Stop at the first batch boundary after this."
)
@click.option(
    "--tasks", "split", type=SplitParam(), default="1/1", help="Tune share i of N (by kernel)."
)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Trials per batch.")
@click.option(
    "--population", type=int, default=512, show_default=True, help="Evolutionary search effort."
)
@click.option("--rpc-tracker", type=HostPortParam(), help="Measure on an RPC device farm.")
@click.option("--rpc-key", help="Device key on the tracker (with --rpc-tracker).")
@click.option("--seed", type=SEED, help="Seed the search (reproducible runs).")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="Tune the kernels of a compile with this --precision.",
)
@click.option(
    "--repair-log",
    is_flag=True,
    help="Drop the log's damaged lines (kept as *.damaged) and continue from the rest.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def tune_cmd(
    model: Path,
    target: str,
    log_dir: Path,
    input_shapes: Mapping[str, tuple[int, ...]],
    freeze: Mapping[str, str],
    trials: int | None,
    trials_per_task: int | None,
    time_limit: float | None,
    split: tuple[int, int],
    batch_size: int,
    population: int,
    rpc_tracker: tuple[str, int] | None,
    rpc_key: str | None,
    seed: int | None,
    precision: str,
    repair_log: bool,
    as_json: bool,
) -> None:
    """Tune MODEL's kernels for a target with MetaSchedule; records go to --log DIR."""
    from tvmflow import api
    from tvmflow.progress import ConsoleProgress, format_table
    from tvmflow.tunelog import read_summary

    result = api.tune(
        model,
        target,
        log=log_dir,
        input_shapes=dict(input_shapes),
        freeze=dict(freeze),
        trials=trials,
        trials_per_task=trials_per_task,
        time_limit_s=time_limit,
        precision=precision,
        seed=seed,
        batch_size=batch_size,
        population=population,
        repair_log=repair_log,
        tasks=split,
        rpc_tracker=rpc_tracker,
        rpc_key=rpc_key,
        progress=ConsoleProgress(),
    )
    if as_json:
        click.echo(json.dumps(read_summary(log_dir), indent=2))
    else:
        click.echo(format_table(result))


@cli.group("logs")
def logs_group() -> None:
    """Work with tuning logs."""


@logs_group.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--best-only", is_flag=True, help="Keep only each kernel's fastest record.")
@click.option(
    "--improving-only",
    is_flag=True,
    help="Keep only the records that beat the default schedule (the form to ship).",
)
def logs_merge_cmd(
    sources: Sequence[Path], output: Path, best_only: bool, improving_only: bool
) -> None:
    """Union tuning logs (e.g. from `tune --tasks i/N` on several machines) into one."""
    from tvmflow.tunelog import merge_logs

    merged = merge_logs(list(sources), output, best_only, improving_only)
    click.echo(
        f"merged {len(sources)} log(s) into {merged.out}: {merged.records} records for "
        f"{merged.workloads} kernels ({merged.duplicates} duplicates dropped)"
    )


@logs_group.command("show")
@click.argument("log", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def logs_show_cmd(log: Path, as_json: bool) -> None:
    """List a log's kernels: trials, default schedule vs best record time, speedup."""
    from dataclasses import asdict

    from tvmflow.progress import format_log
    from tvmflow.tunelog import log_kernels

    kernels = log_kernels(log)
    if as_json:
        click.echo(json.dumps([asdict(k) | {"speedup": k.speedup} for k in kernels], indent=2))
    else:
        click.echo(format_log(kernels))


@cli.group("farm")
def farm_group() -> None:
    """RPC device farms (TVM RPC tracker and servers)."""


@farm_group.command("status")
@click.option("--rpc-tracker", type=HostPortParam(), required=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def farm_status_cmd(rpc_tracker: tuple[str, int], as_json: bool) -> None:
    """List the tracker's device keys with their free and busy servers."""
    from dataclasses import asdict

    from tvmflow.farm import Tracker, farm_status

    tracker = Tracker(*rpc_tracker)
    keys = farm_status(tracker)
    if as_json:
        click.echo(json.dumps([asdict(k) | {"busy": k.busy} for k in keys], indent=2))
        return
    if not keys:
        click.echo(f"tracker {tracker}: no servers registered")
        return
    click.echo(f"{'key':<24} {'servers':>7} {'free':>5} {'busy':>5} {'queued':>6}")
    for k in keys:
        click.echo(f"{k.key:<24} {k.servers:>7} {k.free:>5} {k.busy:>5} {k.pending_requests:>6}")


@cli.command("serve")
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--http-port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8081, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Requests run at once; each gets CPUs/workers TVM threads [default: CPUs].",
)
@click.option(
    "--engine",
    type=click.Choice(["tvmflow", "onnxruntime"]),
    default="tvmflow",
    show_default=True,
    help="onnxruntime: serve the artifacts' ONNX files instead (--onnx), to compare.",
)
@click.option(
    "--onnx",
    "onnx_files",
    type=NAMED_FILE,
    multiple=True,
    metavar="NAME=FILE.onnx",
    help="With --engine onnxruntime: the ONNX file model NAME was compiled from.",
)
def serve_cmd(
    artifacts: Sequence[str],
    http_port: int,
    grpc_port: int,
    workers: int | None,
    engine: str,
    onnx_files: Sequence[tuple[str, Path]],
) -> None:
    """Serve artifacts (DIR or NAME=DIR) on the Open Inference Protocol (REST + gRPC)."""
    from tvmflow.serve import ModelSource, ServeOptions, parse_source, serve

    onnx = dict(onnx_files)
    sources = [ModelSource(n, d, onnx.get(n)) for n, d in map(parse_source, artifacts)]
    options = ServeOptions(http_port, grpc_port, workers, engine)
    serve(sources, options, functools.partial(click.echo, err=True))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this in-process)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="tvmflow", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        return _fail(f"{exc.format_message()}{hint}", 2, debug)
    except TvmflowError as exc:
        return _fail(str(exc), exc.exit_code, debug)
    except (KeyboardInterrupt, click.Abort):
        return _fail("interrupted", 130, debug)
    except Exception as exc:
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            1,
            debug,
        )


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    first = " ".join(message.split("\n")[0].split())
    click.echo(f"tvmflow: error: {first}", err=True)
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
