"""The reference benchmark: tvmflow vs onnxruntime (and OpenVINO) on a fixed set of models.

Run through `scripts/benchmark` (which sets up .venv and fetches the models first). Each model
is compiled for the target preset with the tuning logs shipped in `tuning_logs/<preset>/`,
then measured by `tvmflow.bench`. Writes `benchmarks/<preset>.json`, `.md` and `.png`; a full
(not --quick, not --models) run also puts the table into README.md between the markers.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tvmflow.compile  # noqa: F401  (compile-capable TVM first; bench loads the runtime later)
from tvmflow import bench, zoo
from tvmflow.errors import TvmflowError
from tvmflow.targets import resolve_preset

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
README_START = "<!-- benchmark:start -->"
README_END = "<!-- benchmark:end -->"


@dataclass(frozen=True)
class Reference:
    """One model of the reference set: a zoo model or a fetched file, at fixed shapes."""

    name: str
    shapes: dict[str, tuple[int, ...]]
    zoo_name: str | None = None
    file: str | None = None

    def path(self) -> Path:
        if self.zoo_name:
            return zoo.save(self.zoo_name, CACHE / "bench" / "models")
        path = CACHE / "models" / str(self.file)
        if not path.is_file():
            raise TvmflowError(f"{path} is missing: run scripts/fetch-models")
        return path


SEQ = (1, 128)
REFERENCE_SET = (
    Reference("resnet18", {"image": (1, 3, 224, 224)}, zoo_name="resnet18"),
    Reference("mobilenet_v2", {"image": (1, 3, 224, 224)}, zoo_name="mobilenet_v2"),
    Reference("encoder", {"hidden_in": (1, 128, 256)}, zoo_name="encoder"),
    Reference(
        "minilm-int8",
        {"input_ids": SEQ, "attention_mask": SEQ, "token_type_ids": SEQ},
        file="minilm-int8.onnx",
    ),
    Reference("ppocr-v4-det", {"x": (1, 3, 480, 480)}, file="ppocr-v4-det.onnx"),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [r.name for r in REFERENCE_SET]
    parser = argparse.ArgumentParser(prog="scripts/benchmark", description=__doc__)
    parser.add_argument(
        "--models", help=f"comma-separated subset of {','.join(names)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="few short rounds (a smoke run)")
    parser.add_argument("--target", default="x86", help="target preset (default: x86)")
    parser.add_argument("--threads", type=int, help="threads per engine (default: physical cores)")
    parser.add_argument(
        "--compare",
        help="engines to compare with (default: onnxruntime, plus openvino when installed)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="output directory")
    args = parser.parse_args(argv)
    chosen = args.models.split(",") if args.models else names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    args.models = [r for r in REFERENCE_SET if r.name in chosen]
    return args


def options(args: argparse.Namespace) -> bench.BenchOptions:
    if args.compare:
        comparators = tuple(args.compare.split(","))
    else:
        has_openvino = importlib.util.find_spec("openvino") is not None
        comparators = ("onnxruntime", "openvino") if has_openvino else ("onnxruntime",)
    if args.quick:
        return bench.BenchOptions(args.threads, 1, 3, 0.3, comparators, progress=True)
    return bench.BenchOptions(args.threads, 3, 10, 4.0, comparators, progress=True)


def measure(ref: Reference, preset: str, opts: bench.BenchOptions) -> bench.BenchReport:
    model = ref.path()
    artifact, compile_s = bench.compile_for_bench(
        model, preset, CACHE / "bench" / preset / ref.name, ref.shapes
    )
    return bench.run_bench(model, artifact, opts, input_shapes=ref.shapes, compile_s=compile_s)


def update_readme(readme: Path, markdown: str, source: str) -> bool:
    """Replace the table between the README markers; False when the markers are missing."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        return False
    block = f"{README_START}\n_Latest run ({source}):_\n\n{markdown}{README_END}"
    readme.write_text(pattern.sub(lambda _: block, text))
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        preset = resolve_preset(args.target).name
        opts = options(args)
        reports = []
        for ref in args.models:
            print(f"== {ref.name}: compiling for {preset}, then measuring", flush=True)
            report = measure(ref, preset, opts)
            print(bench.format_table(report), flush=True)
            reports.append(report)
    except TvmflowError as exc:
        print(f"scripts/benchmark: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (preset + ("-quick" if args.quick else ""))
    bench.write_json(reports, stem.with_suffix(".json"))
    bench.write_markdown(reports, stem.with_suffix(".md"))
    bench.plot(reports, stem.with_suffix(".png"))
    print(f"wrote {stem}.json, .md and .png")
    full = not args.quick and len(reports) == len(REFERENCE_SET)
    if full and args.out == ROOT / "benchmarks":
        source = f"`scripts/benchmark`, [benchmarks/{preset}.md](benchmarks/{preset}.md)"
        if update_readme(ROOT / "README.md", bench.to_markdown(reports), source):
            print("updated the table in README.md")
    failed = [Path(r.model).stem for r in reports if not r.passed]
    if failed:
        print(f"scripts/benchmark: accuracy failed for {', '.join(failed)}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
