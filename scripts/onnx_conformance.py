"""Run ONNX's node conformance tests through tvmflow and onnxruntime; write a comparison table.

The cases are the node tests bundled with the onnx 1.22 wheel (onnx/backend/test/data/node:
one small model and its reference inputs/outputs per case; later wheels generate them in
memory instead), extracted once into .cache/. Each case runs in a worker process (at most 2,
with a per-case timeout) through `tvmflow.backend` (host preset, no verify step, cached
builds) and through onnxruntime, and is compared with onnx's own runner check
(`Runner.assert_similar_outputs`, the case's rtol/atol). Outcomes:

- passed: every output matches the reference;
- unsupported: a one-line refusal naming what is missing (an operator no converter covers,
  or a non-tensor input/output such as a sequence), for onnxruntime a NOT_IMPLEMENTED error;
- failed: anything else, wrong numbers, an exception or a timeout. An internal error is a
  failure, never a skip.

Usage: scripts/onnx-conformance [--subset] [--jobs 2] [--timeout 180] [--cases PATTERN]
       [--fetch-only] [--no-report]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ONNX_WHEEL = "onnx==1.22.0"
CACHE = ROOT / ".cache"
NODE_DIR = CACHE / "onnx-node-tests" / "1.22.0"
BUILD_CACHE = CACHE / "onnx-conformance" / "builds"
RESULTS = CACHE / "onnx-conformance" / "results.json"
REPORT = ROOT / "benchmarks" / "onnx-conformance.md"

# The CI subset: cases spanning the common op families, tvmflow's converters and inputs the
# backend bakes (axes, bounds, shapes).
SUBSET = (
    "test_abs",
    "test_add_bcast",
    "test_attention_4d_gqa_with_past_and_present",
    "test_argmax_keepdims_example",
    "test_averagepool_2d_pads",
    "test_batchnorm_epsilon",
    "test_cast_FLOAT_to_FLOAT16",
    "test_clip_default_min",
    "test_concat_2d_axis_negative_1",
    "test_conv_with_strides_and_asymmetric_padding",
    "test_convinteger_with_padding",
    "test_convtranspose_pads",
    "test_cumprod_1d_exclusive",
    "test_cumsum_1d_reverse",
    "test_dropout_default_mask",
    "test_einsum_batch_matmul",
    "test_gather_elements_1",
    "test_gemm_all_attributes",
    "test_gru_seq_length",
    "test_gru_with_initial_bias",
    "test_instancenorm_example",
    "test_layer_normalization_4d_axis1",
    "test_lstm_with_initial_bias",
    "test_lstm_with_peepholes",
    "test_matmul_4d",
    "test_maxpool_2d_dilations",
    "test_nllloss_NCd1_weight_ii",
    "test_qlinearmatmul_3D_int8_float32",
    "test_reduce_mean_keepdims_example",
    "test_resize_upsample_scales_linear",
    "test_rnn_seq_length",
    "test_sce_mean_weight_ii_3d",
    "test_simple_rnn_batchwise",
    "test_slice_neg_steps",
    "test_softmax_axis_0",
    "test_split_equal_parts_1d_opset18",
    "test_transpose_all_permutations_3",
    "test_where_long_example",
)


@dataclass(frozen=True)
class Outcome:
    """One engine's result on one case."""

    status: str  # passed | failed | unsupported
    reason: str = ""


@dataclass(frozen=True)
class CaseResult:
    name: str
    op: str
    tvmflow: Outcome
    onnxruntime: Outcome


def node_tests_dir() -> Path:
    """The onnx 1.22 node test data, extracted once from the wheel into .cache/."""
    if NODE_DIR.is_dir():
        return NODE_DIR
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("onnx-1.22.0-*.whl"))
    if not found:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
        subprocess.run([*pip, "--only-binary=:all:", "-d", str(wheels), ONNX_WHEEL], check=True)
        found = sorted(wheels.glob("onnx-1.22.0-*.whl"))
    prefix = "onnx/backend/test/data/node/"
    tmp = NODE_DIR.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(found[0]) as wheel:
        for member in wheel.namelist():
            if member.startswith(prefix) and not member.endswith("/"):
                out = tmp / member[len(prefix) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(wheel.read(member))
    tmp.replace(NODE_DIR)
    return NODE_DIR


def case_dirs(root: Path, pattern: str | None = None) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if (p / "model.onnx").is_file())
    if pattern:
        rx = re.compile(pattern)
        dirs = [d for d in dirs if rx.search(d.name)]
    return dirs


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def op_of(name: str, node_ops: Sequence[str]) -> str:
    """The operator a case tests: the ONNX op whose snake_case name prefixes the case name."""
    import onnx

    stem = name.removeprefix("test_") + "_"
    schemas = {s.name for s in onnx.defs.get_all_schemas_with_history()} | set(node_ops)

    def matches(op: str) -> bool:  # CastLike: test_castlike_*, SoftmaxCrossEntropyLoss: ..._loss
        return any(stem.startswith(form + "_") for form in (_snake(op), op.lower()))

    best = [op for op in schemas if matches(op)]
    if best:
        return max(best, key=len)
    return node_ops[0] if node_ops else "?"


def _load_case(case: Path) -> tuple[Any, list[tuple[list[Any], list[Any]]]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(case / "model.onnx"))
    sets = []
    for data_dir in sorted(glob.glob(str(case / "test_data_set*"))):
        inputs: list[Any] = []
        outputs: list[Any] = []
        for kind, values, infos in (
            ("input", inputs, model.graph.input),
            ("output", outputs, model.graph.output),
        ):
            count = len(glob.glob(os.path.join(data_dir, f"{kind}_*.pb")))
            for i in range(count):
                data = Path(data_dir, f"{kind}_{i}.pb").read_bytes()
                type_proto = infos[i].type
                if type_proto.HasField("sequence_type"):
                    seq = onnx.SequenceProto()
                    seq.ParseFromString(data)
                    values.append(numpy_helper.to_list(seq))
                elif type_proto.HasField("optional_type"):
                    opt = onnx.OptionalProto()
                    opt.ParseFromString(data)
                    values.append(numpy_helper.to_optional(opt))
                else:
                    tensor = onnx.TensorProto()
                    tensor.ParseFromString(data)
                    values.append(numpy_helper.to_array(tensor))
        sets.append((inputs, outputs))
    return model, sets


def _non_tensor_io(model: Any) -> str | None:
    initializers = {i.name for i in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in initializers:
            continue
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            return f"{value.name} is a {kind} (tvmflow compiles tensors only)"
    return None


def _check(ref: list[Any], got: list[Any], rtol: float, atol: float) -> None:
    from onnx.backend.test.runner import Runner

    Runner.assert_similar_outputs(ref, got, rtol=rtol, atol=atol)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    if isinstance(exc, AssertionError):
        # numpy's assert_allclose: keep the mismatch summary line
        line = next((ln.strip() for ln in lines if "Mismatch" in ln), line or "mismatch")
        return f"wrong result: {line}"[:200]
    return f"{type(exc).__name__}: {line}"[:200]


def run_tvmflow(case: Path) -> Outcome:
    from tvmflow.backend import TvmflowBackend
    from tvmflow.errors import TvmflowError

    model, sets = _load_case(case)
    non_tensor = _non_tensor_io(model)
    if non_tensor:
        return Outcome("unsupported", non_tensor)
    try:
        rep = TvmflowBackend.prepare(model)
        for inputs, ref in sets:
            _check(ref, list(rep.run(inputs)), 1e-3, 1e-7)
    except TvmflowError as exc:
        message = str(exc)
        if message.startswith(("unsupported operators", "unsupported dtype")):
            return Outcome("unsupported", message.split(";")[0][:200])
        return Outcome("failed", f"TvmflowError: {message.splitlines()[0][:200]}")
    except Exception as exc:
        return Outcome("failed", _first_line(exc))
    return Outcome("passed")


def run_onnxruntime(case: Path) -> Outcome:
    from tvmflow.engines import onnxruntime_session

    model, sets = _load_case(case)
    try:
        session = onnxruntime_session(model.SerializeToString(), threads=1)
        names = [i.name for i in session.get_inputs()]
        for inputs, ref in sets:
            got = session.run(None, dict(zip(names, inputs, strict=False)))
            _check(ref, got, 1e-3, 1e-7)
    except Exception as exc:
        text = str(exc)
        if "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text:
            return Outcome("unsupported", _first_line(exc))
        return Outcome("failed", _first_line(exc))
    return Outcome("passed")


def _case_op(case: Path) -> str:
    import onnx

    model = onnx.load(str(case / "model.onnx"), load_external_data=False)
    return op_of(case.name, [n.op_type for n in model.graph.node])


def run_case(case: Path) -> CaseResult:
    """Both engines on one case (runs in a worker process)."""
    return CaseResult(case.name, _case_op(case), run_tvmflow(case), run_onnxruntime(case))


def _worker_init() -> None:
    os.environ.setdefault("TVMFLOW_BACKEND_CACHE", str(BUILD_CACHE))
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    import tvmflow.compile  # noqa: F401  (compile-capable TVM before the runtime loader)


def run_all(cases: Sequence[Path], jobs: int, timeout: float) -> list[CaseResult]:
    """Every case in a pool of `jobs` worker processes; a case past `timeout` s fails."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from pebble import ProcessPool
    from tqdm import tqdm

    results = []
    with ProcessPool(max_workers=jobs, max_tasks=200, initializer=_worker_init) as pool:
        futures = [(case, pool.schedule(run_case, args=(case,), timeout=timeout)) for case in cases]
        for case, future in tqdm(futures, desc="node tests", unit="case"):
            try:
                results.append(future.result())
            except FutureTimeout:
                dead = Outcome("failed", f"timeout after {timeout:.0f} s")
                results.append(CaseResult(case.name, _case_op(case), dead, run_onnxruntime(case)))
            except Exception as exc:  # the worker died (segfault, out of memory)
                dead = Outcome("failed", f"worker died: {_first_line(exc)}")
                results.append(CaseResult(case.name, _case_op(case), dead, run_onnxruntime(case)))
    return results


def _counts(outcomes: Iterable[Outcome]) -> collections.Counter[str]:
    return collections.Counter(o.status for o in outcomes)


def failure_class(reason: str) -> str:
    """A failure reason with case-specific numbers and names removed, for grouping."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    text = re.sub(r"\b\d+(\.\d+)?(e[-+]?\d+)?\b", "N", text)
    return text[:110]


def render(results: Sequence[CaseResult], seconds: float) -> str:
    tvm = _counts(r.tvmflow for r in results)
    ort = _counts(r.onnxruntime for r in results)
    both = sum(r.tvmflow.status == r.onnxruntime.status == "passed" for r in results)
    only_tvm = sum(r.tvmflow.status == "passed" != r.onnxruntime.status for r in results)
    only_ort = sum(r.onnxruntime.status == "passed" != r.tvmflow.status for r in results)
    lines = [
        "# ONNX node conformance: tvmflow vs onnxruntime",
        "",
        f"The {len(results)} node tests bundled with onnx 1.22, each through `tvmflow.backend` "
        "(host preset, no verify step) and onnxruntime, checked with onnx's runner "
        "(rtol 1e-3, atol 1e-7). Written by `scripts/onnx-conformance` in "
        f"{seconds / 60:.1f} min.",
        "",
        "| | passed | failed | unsupported |",
        "|---|---:|---:|---:|",
        f"| tvmflow | {tvm['passed']} | {tvm['failed']} | {tvm['unsupported']} |",
        f"| onnxruntime | {ort['passed']} | {ort['failed']} | {ort['unsupported']} |",
        "",
        f"Both pass {both}; only tvmflow {only_tvm}; only onnxruntime {only_ort}.",
        "",
        "## tvmflow failure classes",
        "",
        "| cases | reason |",
        "|---:|---|",
    ]
    classes = collections.Counter(
        failure_class(r.tvmflow.reason) for r in results if r.tvmflow.status == "failed"
    )
    lines += [f"| {n} | {reason.replace('|', '/')} |" for reason, n in classes.most_common(25)]
    lines += ["", "## Per operator", ""]
    lines += [
        "| op | cases | tvmflow pass / fail / unsup | onnxruntime pass / fail / unsup |",
        "|---|---:|---|---|",
    ]
    by_op: dict[str, list[CaseResult]] = collections.defaultdict(list)
    for r in results:
        by_op[r.op].append(r)
    for op in sorted(by_op):
        group = by_op[op]
        t, o = _counts(r.tvmflow for r in group), _counts(r.onnxruntime for r in group)
        lines.append(
            f"| {op} | {len(group)} | {t['passed']} / {t['failed']} / {t['unsupported']} | "
            f"{o['passed']} / {o['failed']} / {o['unsupported']} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", action="store_true", help="only the CI subset")
    parser.add_argument("--cases", help="regex: only the cases whose name matches")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per case")
    parser.add_argument("--no-report", action="store_true", help="do not write the table")
    parser.add_argument("--fetch-only", action="store_true", help="only extract the cases")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = node_tests_dir()
    if args.fetch_only:
        return 0
    cases = case_dirs(root, args.cases)
    if args.subset:
        cases = [c for c in cases if c.name in SUBSET]
    start = time.perf_counter()
    results = run_all(cases, max(1, min(args.jobs, 2)), args.timeout)
    seconds = time.perf_counter() - start
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps([asdict(r) for r in results], indent=1))
    report = render(results, seconds)
    full = not (args.subset or args.cases)
    if full and not args.no_report:
        REPORT.write_text(report)
    print(report.split("## Per operator")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
