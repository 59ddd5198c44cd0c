"""The int8 benchmark: QDQ models compiled by tvmflow beside onnxruntime and OpenVINO.

Run through `scripts/benchmark-int8`. The models are onnxruntime's `quantize_static` (QDQ,
uint8 activations, int8 weights; `zoo.quantize_qdq`, seeded calibration, no network) of the
zoo ResNet-18, MobileNetV2 and 4-layer encoder, cached in .cache/bench/models/. Each is
compiled for every `--targets` preset (default x86, which picks x86-avx512-vnni on VNNI
hosts: QDQ chains run as int8 kernels, `tvmflow.qdq`; x86-avx512 has no VNNI, so it shows
the float path the same model took before) and measured by `tvmflow.bench` in interleaved
rounds with the peers, 1 thread each by default. onnxruntime runs QDQ models as int8
kernels (QLinearConv, QLinearAdd); OpenVINO runs them as its int8 kernels too. Writes
benchmarks/int8.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import tvmflow.compile  # noqa: F401  (compile-capable TVM first; bench loads the runtime later)
from tvmflow import bench, zoo
from tvmflow.errors import TvmflowError
from tvmflow.targets import resolve_preset

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
MODELS = {
    "resnet18-qdq": ("resnet18", {"image": (1, 3, 224, 224)}),
    "mobilenet_v2-qdq": ("mobilenet_v2", {"image": (1, 3, 224, 224)}),
    "encoder-qdq": ("encoder", {"hidden_in": (1, 128, 256)}),
}


def qdq_model(name: str) -> Path:
    """The cached QDQ model (made once from the zoo model)."""
    zoo_name, shapes = MODELS[name]
    path = CACHE / "models" / f"{zoo_name}-qdq.onnx"
    if not path.is_file():
        zoo.quantize_qdq(zoo.MODELS[zoo_name](), path.parent, shapes)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/benchmark-int8", description=__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--targets", default="x86", help="comma-separated presets")
    parser.add_argument("--threads", type=int, default=1, help="threads per engine")
    parser.add_argument("--compare", help="engines (default: onnxruntime, openvino if installed)")
    parser.add_argument("--quick", action="store_true", help="few short rounds (a smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="output directory")
    args = parser.parse_args(argv)
    args.models = args.models.split(",")
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    return args


def options(args: argparse.Namespace) -> bench.BenchOptions:
    if args.compare:
        comparators = tuple(args.compare.split(","))
    else:
        has_openvino = importlib.util.find_spec("openvino") is not None
        comparators = ("onnxruntime", *(("openvino",) if has_openvino else ()))
    if args.quick:
        return bench.BenchOptions(args.threads, 1, 3, 0.3, comparators, progress=True)
    return bench.BenchOptions(args.threads, 3, 10, 4.0, comparators, progress=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reports = []
    try:
        opts = options(args)
        for target in args.targets.split(","):
            preset = resolve_preset(target).name
            for name in args.models:
                model, shapes = qdq_model(name), MODELS[name][1]
                print(f"== {name}: compiling for {preset}, then measuring", flush=True)
                artifact, compile_s = bench.compile_for_bench(
                    model, preset, CACHE / preset / name, shapes
                )
                report = bench.run_bench(
                    model, artifact, opts, input_shapes=shapes, compile_s=compile_s, name=name
                )
                print(bench.format_table(report), flush=True)
                reports.append(report)
    except TvmflowError as exc:
        print(f"scripts/benchmark-int8: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / ("int8-quick" if args.quick else "int8")
    bench.write_json(reports, stem.with_suffix(".json"))
    bench.write_markdown(reports, stem.with_suffix(".md"))
    print(f"wrote {stem}.json and .md")
    failed = [r.label for r in reports if not r.passed]
    if failed:
        print(f"scripts/benchmark-int8: accuracy failed for {', '.join(failed)}", file=sys.stderr)
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
