"""Compile a model, then time it against onnxruntime and break tvmflow's time down by kernel.

Run through `scripts/profile-kernels`. Prints the interleaved side-by-side latency ratio and
the slowest kernels (time, share, calls, GFLOP/s for conv/matmul); `--json` also writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

# Compile-capable TVM first (the runtime-only loader must not claim the process).
import tvmflow.compile  # noqa: F401
from tvmflow import zoo
from tvmflow.compile import CompileOptions, compile_model
from tvmflow.errors import TvmflowError
from tvmflow.frontend import ImportedModel, load_onnx
from tvmflow.inputs import random_inputs
from tvmflow.kernel_profile import format_profile, kernel_flops, profile_artifact
from tvmflow.lowering import lower
from tvmflow.targets import resolve_preset


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.partition("=")
    return name, tuple(int(d) for d in dims.split(","))


def _load(model: str, shapes: dict[str, tuple[int, ...]], scratch: Path) -> ImportedModel:
    """A zoo name or an ONNX path; zoo models get batch 1 unless shapes are given."""
    if model in zoo.MODELS:
        path = zoo.save(model, scratch)
        if not shapes:
            import onnx

            graph = onnx.load(str(path)).graph
            for inp in graph.input:
                dims = inp.type.tensor_type.shape.dim
                shapes[inp.name] = tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)
        return load_onnx(path, shapes)
    return load_onnx(Path(model), shapes)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/profile-kernels", description=__doc__)
    parser.add_argument("model", help="zoo model name or .onnx path")
    parser.add_argument("--input-shape", action="append", type=_shape, default=[])
    parser.add_argument("--target", default="x86")
    parser.add_argument("--threads", type=int, help="default: the preset's num-cores")
    parser.add_argument("--tuning-log", action="append", type=Path, default=[])
    parser.add_argument("--no-shipped-logs", action="store_true")
    parser.add_argument("--precision", default="fp32", help="as tvmflow compile --precision")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, help="keep the artifact here")
    parser.add_argument("--json", type=Path, help="also write the profile as JSON")
    args = parser.parse_args(argv)

    preset = resolve_preset(args.target)
    threads = args.threads or int(preset.target.get("num-cores", 1))
    with tempfile.TemporaryDirectory(prefix="tvmflow-profile-") as tmp:
        scratch = Path(tmp)
        model = _load(args.model, dict(args.input_shape), scratch)
        options = CompileOptions(
            tuning_logs=tuple(args.tuning_log),
            use_shipped_logs=not args.no_shipped_logs,
            precision=args.precision,
        )
        artifact = compile_model(model, preset, args.out or scratch / "artifact", options)
        flops = kernel_flops(lower(model, preset, options.lowering).mod)
        feeds = random_inputs(model.inputs, seed=0)
        profile = profile_artifact(
            artifact.directory, model.path, feeds, flops, threads, args.rounds, args.per_round
        )
    tuning = artifact.manifest.tuning
    print(
        f"compiled in {artifact.manifest.compile_seconds:.1f} s; tuned kernels "
        f"{tuning.tasks_tuned}/{tuning.tasks_total}"
    )
    print(format_profile(profile, args.top))
    if args.json:
        args.json.write_text(json.dumps(asdict(profile), indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except TvmflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
