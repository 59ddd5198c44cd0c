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
from tvmflow import bench, reporting, zoo
from tvmflow.errors import TvmflowError
from tvmflow.targets import resolve_preset

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
README_START, README_END = "<!-- int8:start -->", "<!-- int8:end -->"
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
                print(reporting.format_table(report), flush=True)
                reports.append(report)
    except TvmflowError as exc:
        print(f"scripts/benchmark-int8: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / ("int8-quick" if args.quick else "int8")
    reporting.write_json(reports, stem.with_suffix(".json"))
    reporting.write_markdown(reports, stem.with_suffix(".md"))
    print(f"wrote {stem}.json and .md")
    if not args.quick and args.out == ROOT / "benchmarks":
        update_readme(ROOT / "README.md", summary(reports))
    failed = [r.label for r in reports if not r.passed]
    if failed:
        print(f"scripts/benchmark-int8: accuracy failed for {', '.join(failed)}", file=sys.stderr)
    return 3 if failed else 0


def summary(reports: Sequence[bench.BenchReport]) -> str:
    """The README's short table: one row per model and preset, p50 ratios with their 95 %
    bootstrap intervals (the full tables are in benchmarks/int8.md)."""
    peers = [r.baseline for r in reports[0].ratios] if reports else []
    head = ["model", "preset (path)", "tvmflow p50 ms", *(f"tvmflow/{p}" for p in peers)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rep in reports:
        path = "int8 kernels" if "vnni" in rep.preset else "float"
        ratios = [f"{r.p50_ratio:.2f}x [{r.ci_low:.2f}, {r.ci_high:.2f}]" for r in rep.ratios]
        p50 = rep.engine("tvmflow").p50_ms
        rows.append(f"| {rep.label} | {rep.preset} ({path}) | {p50:.2f} | {' | '.join(ratios)} |")
    return "\n".join(rows)


def update_readme(readme: Path, table: str) -> None:
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return
    new = text[: start + len(README_START)] + "\n" + table + "\n" + text[end:]
    readme.write_text(new)
    print("updated the int8 table in README.md")


if __name__ == "__main__":
    sys.exit(main())
