"""The `tvmflow` command: a thin click layer that builds options objects and calls the library.

This is the only module that knows click. Errors are mapped to exit codes in one place,
`main`: a user's mistake (TvmflowError, bad flags) is one line on stderr and exit 2, an
accuracy failure exit 1, anything unexpected exit 1; `--debug` adds the traceback.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from tvmflow.errors import TvmflowError


class ShapeParam(click.ParamType):
    """`NAME=D1,D2,...` → (name, dims)."""

    name = "NAME=D1,D2,..."

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, tuple[int, ...]]:
        if isinstance(value, tuple):
            return value
        name, sep, dims = str(value).partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d <= 0 for d in shape):
            self.fail(f"{value!r} is not NAME=D1,D2,... with positive integer dims", param, ctx)
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


SHAPE = ShapeParam()
NAMED_FILE = NamedFileParam()
input_shape_option = click.option(
    "--input-shape",
    "input_shapes",
    type=SHAPE,
    multiple=True,
    help="Fix an input's shape, e.g. x=1,3,224,224 (repeatable; needed for dynamic dims).",
)
target_option = click.option(
    "--target", "-t", required=True, help="Preset name (see `tvmflow targets`) or a .toml path."
)


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

    rows = []
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
    help="Artifact directory to write (model.so + manifest.json).",
)
@input_shape_option
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
@click.option("--atol", type=float, default=1e-4, show_default=True)
@click.option(
    "--rtol",
    type=float,
    default=1e-3,
    show_default=True,
    help="Tolerance relative to the output's largest magnitude.",
)
def compile_cmd(
    model: Path,
    target: str,
    output: Path,
    input_shapes: Sequence[tuple[str, tuple[int, ...]]],
    tuning_logs: Sequence[Path],
    no_shipped_logs: bool,
    no_verify: bool,
    atol: float,
    rtol: float,
) -> None:
    """Compile MODEL (.onnx) for a target into an artifact directory."""
    from tvmflow.accuracy import Tolerance
    from tvmflow.compile import CompileOptions, compile_model
    from tvmflow.frontend import load_onnx
    from tvmflow.targets import resolve_preset

    preset = resolve_preset(target)
    imported = load_onnx(model, dict(input_shapes))
    options = CompileOptions(
        tuple(tuning_logs), not no_shipped_logs, not no_verify, Tolerance(atol, rtol)
    )
    artifact = compile_model(imported, preset, output, options)
    m = artifact.manifest
    click.echo(
        f"compiled {model} for {m.preset} in {m.compile_seconds:.1f}s -> {artifact.directory}"
    )
    click.echo(f"  tuned kernels: {m.tuning.tasks_tuned}/{m.tuning.tasks_total}")
    for acc in m.accuracy or ():
        click.echo(f"  {acc.name}: max abs err {acc.max_abs_err:.2e}, rel {acc.max_rel_err:.2e}")
    if m.accuracy is None:
        click.echo("  accuracy: not checked (target does not run here, or --no-verify)")


@cli.command("inspect")
@click.argument("artifact", type=click.Path(path_type=Path))
def inspect_cmd(artifact: Path) -> None:
    """Print an artifact's manifest (does not load the library)."""
    from tvmflow.manifest import read_manifest

    click.echo(json.dumps(read_manifest(artifact).to_json(), indent=2))


@cli.command("run")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--input", "input_files", type=NAMED_FILE, multiple=True, help="NAME=FILE.npy")
@click.option(
    "--inputs",
    "npz",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="An .npz file holding every input by name.",
)
@click.option("--random", "use_random", is_flag=True, help="Seeded random inputs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Save outputs as .npz.")
def run_cmd(
    artifact: Path,
    input_files: Sequence[tuple[str, Path]],
    npz: Path | None,
    use_random: bool,
    seed: int,
    output: Path | None,
) -> None:
    """Run an artifact on inputs and print (or save) its outputs."""
    from tvmflow.inputs import load_inputs, random_inputs
    from tvmflow.runtime import load

    if use_random == bool(input_files or npz):
        raise TvmflowError(
            "give either --random or inputs (--input NAME=FILE.npy / --inputs F.npz)"
        )
    model = load(artifact)
    feeds = random_inputs(model.inputs, seed) if use_random else load_inputs(dict(input_files), npz)
    start = time.perf_counter()
    outputs = model.run(feeds)
    elapsed = time.perf_counter() - start
    if output:
        np.savez(output, **outputs)
        click.echo(f"wrote {len(outputs)} output(s) to {output}")
    for name, arr in outputs.items():
        click.echo(
            f"{name}: {arr.dtype}{list(arr.shape)} min {arr.min():.4g} max {arr.max():.4g} "
            f"mean {arr.mean():.4g}"
        )
    click.echo(f"ran in {elapsed * 1e3:.2f} ms (first run)")


@cli.command("demo")
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path(".tvmflow-demo"), show_default=True
)
def demo_cmd(workdir: Path) -> None:
    """Compile the built-in model for this host, run it and compare with onnxruntime."""
    from tvmflow.compile import compile_model
    from tvmflow.frontend import load_onnx
    from tvmflow.targets import resolve_preset
    from tvmflow.zoo import DEMO_MODEL, DEMO_SHAPES, save

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
@click.option(
    "--inputs",
    "npz",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="An .npz file holding every input by name (default: seeded random inputs).",
)
@click.option(
    "--threads", type=click.IntRange(min=1), help="Threads per engine [default: physical cores]."
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
    help="Engines to compare with, comma-separated: onnxruntime,openvino.",
)
@click.option("--atol", type=float, default=1e-4, show_default=True)
@click.option(
    "--rtol",
    type=float,
    default=1e-3,
    show_default=True,
    help="Tolerance relative to the output's largest magnitude.",
)
@click.option("--seed", type=int, default=0, show_default=True)
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
    input_shapes: Sequence[tuple[str, tuple[int, ...]]],
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

    from tvmflow import bench
    from tvmflow.accuracy import Tolerance
    from tvmflow.inputs import load_inputs

    if (artifact is None) == (target is None):
        raise TvmflowError("give exactly one of --artifact DIR or --target NAME")
    if tuning_logs and target is None:
        raise TvmflowError("--tuning-log applies to --target only (an artifact is already built)")
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
    arrays = load_inputs(npz=npz) if npz else None
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
            )
        report = bench.run_bench(
            model, artifact, options, arrays, str(npz), dict(input_shapes), compile_s
        )
    click.echo(bench.format_table(report))
    for path, write in ((json_path, bench.write_json), (markdown, bench.write_markdown)):
        if path:
            write([report], path)
            click.echo(f"wrote {path}")
    if plot:
        bench.plot([report], plot)
        click.echo(f"wrote {plot}")
    bench.check_accuracy(report)


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
