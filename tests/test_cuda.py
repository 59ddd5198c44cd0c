"""CUDA targets: artifacts carry nvcc-built fatbins, load without a compiler, fail clearly.

Building needs nvcc but no GPU, so these run on CI wherever nvcc is installed (skipped
otherwise). Running on a GPU is in the `gpu`-marked tests at the end (skipped without one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from tvmflow import cuda, targets
from tvmflow.accuracy import FP16_TOLERANCE, compare, onnxruntime_outputs, output_scales
from tvmflow.cli import main
from tvmflow.compile import Artifact, CompileOptions, compile_model
from tvmflow.errors import TvmflowError
from tvmflow.frontend import load_onnx, to_relax
from tvmflow.inputs import random_inputs
from tvmflow.lowering import fuse
from tvmflow.manifest import LIBRARY_NAME, read_manifest
from tvmflow.schedules import apply_default_schedules
from tvmflow.targets import resolve_preset

from .conftest import ZOO_SHAPES

ROOT = Path(__file__).resolve().parent.parent
needs_nvcc = pytest.mark.skipif(targets.find_tool("nvcc") is None, reason="nvcc not installed")
CUDA_SOURCE_MARKERS = (b'extern "C" __global__', b"__global__", b"__launch_bounds__")


def _build(zoo_dir: Path, name: str, preset: str, out: Path, **options: object) -> Artifact:
    model = load_onnx(zoo_dir / f"{name}.onnx", ZOO_SHAPES[name])
    return compile_model(model, resolve_preset(preset), out, CompileOptions(**options))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cuda_block(zoo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """The ResNet-style block (conv, batch norm, pooling, softmax) built for an H100/H200."""
    if targets.find_tool("nvcc") is None:
        pytest.skip("nvcc not installed")
    return _build(zoo_dir, "resnet_block", "cuda-sm90", tmp_path_factory.mktemp("cuda") / "block")


@pytest.fixture(scope="module")
def stub_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a fake `libcuda.so.1` whose every call reports "no device".

    TVM's CUDA runtime library links against the driver. With this stand-in it loads on a
    machine without a GPU, so the artifact's CUDA module is really deserialized — the step
    that would call NVRTC if model.so held source — and the no-GPU check is reached.
    """
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in driver library")
    runtime_cuda = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    with open(runtime_cuda, "rb") as f:
        dynsym = ELFFile(f).get_section_by_name(".dynsym")
        assert isinstance(dynsym, SymbolTableSection)
        driver_calls = sorted(
            s.name
            for s in dynsym.iter_symbols()
            if s["st_shndx"] == "SHN_UNDEF" and s.name.startswith("cu") and s.name[2].isupper()
        )
    assert "cuModuleLoadData" in driver_calls
    directory = tmp_path_factory.mktemp("stub-driver")
    source = directory / "stub.c"
    source.write_text("".join(f"int {name}(void) {{ return 100; }}\n" for name in driver_calls))
    subprocess.run(
        [cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", "libcuda.so.1", "stub.c"],
        cwd=directory,
        check=True,
    )
    return directory


# Runs in a fresh runtime-only process: what a production host does with an artifact.
LOAD_PROBE = textwrap.dedent(
    """
    import json, sys
    from tvmflow.errors import TvmflowError
    import tvmflow.runtime
    out = {}
    try:
        tvmflow.runtime.load(sys.argv[1])
        out["load"] = "loaded"
    except TvmflowError as exc:
        out["load"] = str(exc)
    import tvm
    out["runtime_only"] = bool(tvm.base._RUNTIME_ONLY)
    try:
        lib = tvm.runtime.load_module(sys.argv[1] + "/model.so")
        lib["vm_load_executable"]()
        out["module"] = [m.kind for m in lib.imports] + [
            i.kind for m in lib.imports for i in m.imports
        ]
    except Exception as exc:
        out["module"] = f"{type(exc).__name__}: {exc}"
    maps = open("/proc/self/maps").read()
    out["mapped"] = [n for n in ("libtvm_compiler", "nvrtc", "libcuda.so.1") if n in maps]
    print(json.dumps(out))
    """
)


def _probe_load(directory: Path, stub_driver: Path) -> dict[str, object]:
    env = {
        **os.environ,
        "TVM_USE_RUNTIME_LIB": "1",
        "LD_LIBRARY_PATH": f"{stub_driver}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_PROBE, str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@needs_nvcc
def test_cuda_artifact_holds_a_fatbin_for_the_preset_arch(cuda_block: Artifact) -> None:
    modules = cuda.device_modules(cuda.library_blob(cuda_block.library))
    assert len(modules) == 1
    (module,) = modules
    assert module.fmt == "fatbin"
    assert len(module.kernels) >= 5  # conv, pooling, matmul, softmax kernels
    entries = cuda.fatbin_entries(module.code)
    assert cuda.FatbinEntry("sass", 90) in entries  # machine code for sm_90
    assert cuda.FatbinEntry("ptx", 90) in entries  # and PTX, for newer GPUs
    assert {e.sm for e in entries} == {90}
    raw = cuda_block.library.read_bytes()
    for marker in CUDA_SOURCE_MARKERS:
        assert marker not in raw
    manifest = read_manifest(cuda_block.directory)
    assert manifest.extra["device_code"]["format"] == "fatbin"
    assert manifest.extra["device_code"]["images"] == ["compute_90", "sm_90"]
    assert manifest.extra["device_code"]["kernels"] == len(module.kernels)
    assert manifest.precision == "fp32"
    assert manifest.device == "cuda" and manifest.target["arch"] == "sm_90"


@needs_nvcc
def test_device_code_follows_the_preset_arch(zoo_dir: Path, tmp_path: Path) -> None:
    artifact = _build(zoo_dir, "mlp", "cuda-sm75", tmp_path / "mlp")
    (module,) = cuda.device_modules(cuda.library_blob(artifact.library))
    assert {(e.kind, e.sm) for e in cuda.fatbin_entries(module.code)} == {
        ("sass", 75),
        ("ptx", 75),
    }


@needs_nvcc
def test_without_a_gpu_accuracy_is_null_with_the_reason(cuda_block: Artifact) -> None:
    if tvm.cuda(0).exist:
        pytest.skip("a GPU is present: the artifact was verified")
    manifest = read_manifest(cuda_block.directory)
    assert manifest.accuracy is None
    assert manifest.extra["accuracy_note"] == (
        "not checked: this machine cannot run it (it runs on an NVIDIA GPU and no CUDA GPU is "
        "visible on this machine)"
    )


@needs_nvcc
def test_fatbin_artifact_loads_runtime_only_with_no_compiler(
    cuda_block: Artifact, stub_driver: Path
) -> None:
    """Deserializing the CUDA module needs no NVRTC/nvcc/TVM compiler; then: no GPU, exit."""
    out = _probe_load(cuda_block.directory, stub_driver)
    assert out["runtime_only"] is True
    assert out["module"] == ["library", "cuda"]
    assert "no CUDA GPU is visible on this machine" in str(out["load"])
    assert out["mapped"] == ["libcuda.so.1"]  # the stand-in driver; no compiler, no NVRTC


@needs_nvcc
def test_tvm_default_export_would_need_a_compiler_at_load(
    zoo_dir: Path, tmp_path: Path, stub_driver: Path
) -> None:
    """The problem the fatbin solves: TVM's own export keeps source, which needs NVRTC."""
    target = tvm.target.Target(resolve_preset("cuda-sm90").target)
    mod = to_relax(load_onnx(zoo_dir / "mlp.onnx", ZOO_SHAPES["mlp"]))
    mod = apply_default_schedules(fuse(mod, target), target)
    with cuda.source_codegen():
        executable = relax.build(mod, target=target)
    library = tmp_path / LIBRARY_NAME
    executable.export_library(str(library))
    (module,) = cuda.device_modules(cuda.library_blob(library))
    assert module.fmt == "cuda" and b"__global__" in module.code
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import ctypes, os, sys, tvm\n"
        "lib = os.path.join(os.path.dirname(tvm.__file__), 'lib', 'libtvm_runtime_cuda.so')\n"
        "ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)\n"
        "try:\n"
        "    tvm.runtime.load_module(sys.argv[1]); print('loaded')\n"
        "except Exception as exc:\n"
        "    print('failed:', exc)\n"
    )
    env = {
        **os.environ,
        "TVM_USE_RUNTIME_LIB": "1",
        "LD_LIBRARY_PATH": str(stub_driver),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, str(probe), str(library)], env=env, capture_output=True, text=True
    )
    assert proc.stdout.startswith("failed:") and "NVRTC" in proc.stdout, proc.stdout + proc.stderr


def test_source_codegen_keeps_source_where_the_cuda_factory_is_registered(zoo_dir: Path) -> None:
    """On a GPU build box TVM's CUDA runtime registers `ffi.Module.create.cuda`, which compiles
    at build time (NVRTC by default); `source_codegen` keeps the source for nvcc there too."""
    import tvm_ffi

    name = "ffi.Module.create.cuda"
    if name in tvm_ffi.registry.list_global_func_names():
        pytest.skip("TVM's CUDA runtime is loaded here: cannot stand in for it")
    target = tvm.target.Target(resolve_preset("cuda-sm90").target)
    mod = to_relax(load_onnx(zoo_dir / "mlp.onnx", ZOO_SHAPES["mlp"]))
    mod = apply_default_schedules(fuse(mod, target), target)

    def factory(code: bytes, fmt: str, fmap: object, source: object) -> None:
        raise RuntimeError(f"runtime factory called with fmt {fmt}")

    tvm_ffi.register_global_func(name, factory)
    try:
        with pytest.raises(RuntimeError, match="runtime factory called with fmt cuda"):
            relax.build(mod, target=target)
        with cuda.source_codegen():
            executable = relax.build(mod, target=target)
    finally:
        tvm_ffi.remove_global_func(name)
    (device,) = [m for m in executable.mod.imports[0].imports if m.kind == "cuda"]
    assert "__global__" in device.inspect_source("cuda")


@needs_nvcc
def test_running_a_cuda_artifact_without_a_gpu_exits_2(
    cuda_block: Artifact, capsys: pytest.CaptureFixture[str]
) -> None:
    if tvm.cuda(0).exist:
        pytest.skip("a GPU is present")
    assert main(["run", str(cuda_block.directory), "--random"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("tvmflow: error: cannot load TVM's CUDA runtime")
    assert "libcuda.so.1" in err and "GPU host" in err


def test_an_older_gpu_is_refused_newer_ones_run() -> None:
    assert cuda.gpu_mismatch("8.6", "sm_90") == (
        "needs compute capability 9.0 or newer and this GPU has compute capability 8.6"
    )
    assert cuda.gpu_mismatch("9.0", "sm_90") is None
    assert cuda.gpu_mismatch("8.9", "sm_86") is None  # same major: machine code runs
    assert cuda.gpu_mismatch("10.0", "sm_90") is None  # newer major: the driver JITs the PTX


def test_gencode_flags_give_machine_code_and_ptx() -> None:
    assert cuda.gencode_flags("sm_86") == [
        "-gencode",
        "arch=compute_86,code=sm_86",
        "-gencode",
        "arch=compute_86,code=compute_86",
    ]
    with pytest.raises(TvmflowError, match="sm_XY"):
        cuda.gencode_flags("ampere")


def test_cuda_preset_with_cuda_home_pointing_nowhere_exits_2(
    zoo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "nowhere"))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    args = ["compile", str(zoo_dir / "mlp.onnx"), "-t", "cuda-sm90", "-o", str(tmp_path / "o")]
    assert main([*args, "--input-shape", "x=4,64"]) == 2
    err = capsys.readouterr().err
    assert f"CUDA_HOME={tmp_path / 'nowhere'} has no bin/nvcc" in err
    assert "set CUDA_HOME" in err
    assert not (tmp_path / "o").exists()


def test_cuda_preset_without_nvcc_anywhere_exits_2(
    zoo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(targets, "CUDA_STANDARD_HOME", tmp_path / "cuda")
    args = ["compile", str(zoo_dir / "mlp.onnx"), "-t", "cuda-sm80", "-o", str(tmp_path / "o")]
    assert main([*args, "--input-shape", "x=4,64"]) == 2
    err = capsys.readouterr().err
    assert "nvcc is not on PATH and not in" in err and "set CUDA_HOME" in err


def test_fp16_is_refused_for_cpu_presets(zoo_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["compile", str(zoo_dir / "mlp.onnx"), "-t", "x86", "-o", str(tmp_path / "o")]
    assert main([*args, "--input-shape", "x=4,64", "--precision", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "--precision fp16 is for CUDA targets" in err and "use --precision fp32" in err


def test_fp16_mixed_precision_stays_within_fp16_tolerance(zoo_dir: Path) -> None:
    """ToMixedPrecision's numerics, checked on the CPU (no GPU here): fp16 kernels, fp32 I/O."""
    model = load_onnx(zoo_dir / "resnet_block.onnx", ZOO_SHAPES["resnet_block"])
    target = tvm.target.Target({"kind": "llvm"})
    mod = fuse(to_relax(model), target, "fp16")
    kernels = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any('"float16"' in f.script() for f in kernels)  # kernels really compute in fp16
    executable = relax.build(apply_default_schedules(mod, target), target=target)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    feeds = random_inputs(model.inputs, seed=0)
    out = vm["main"](tvm.runtime.tensor(feeds["image"]))
    actual = {"probs": out.numpy()}
    assert actual["probs"].dtype == np.float32
    expected = onnxruntime_outputs(model.path, feeds)
    (acc,) = compare(actual, expected)
    assert FP16_TOLERANCE.passes(acc, output_scales(expected)["probs"])
    assert acc.max_abs_err > 0  # really fp16: not bit-identical to the fp32 reference


@needs_nvcc
def test_fp16_cuda_build_records_its_precision(zoo_dir: Path, tmp_path: Path) -> None:
    artifact = _build(zoo_dir, "resnet_block", "cuda-sm80", tmp_path / "fp16", precision="fp16")
    manifest = read_manifest(artifact.directory)
    assert manifest.precision == "fp16"
    assert manifest.inputs[0].dtype == "float32" and manifest.outputs[0].dtype == "float32"
    (module,) = cuda.device_modules(cuda.library_blob(artifact.library))
    assert module.fmt == "fatbin"
    assert cuda.FatbinEntry("sass", 80) in cuda.fatbin_entries(module.code)


@pytest.mark.slow  # ~1-3 min: MetaSchedule parses all tensor intrinsics on first use
def test_cuda_presets_are_accepted_by_metaschedule(zoo_dir: Path) -> None:
    """Task extraction, design spaces and postprocessed candidates (VerifyGPUCode checks the
    preset's thread/shared-memory limits) for a CUDA preset: everything but measuring."""
    from tvm.s_tir import meta_schedule as ms

    target = tvm.target.Target(resolve_preset("cuda-sm90").target)
    mod = fuse(to_relax(load_onnx(zoo_dir / "mlp.onnx", ZOO_SHAPES["mlp"])), target)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    assert len(tasks) == 2
    for task in tasks:
        context = ms.TuneContext(
            mod=task.dispatched[0],
            target=target,
            space_generator="post-order-apply",
            search_strategy=ms.search_strategy.ReplayTrace(),
            task_name=task.task_name,
            num_threads=1,
            rand_state=0,
        )
        spaces = context.generate_design_space()
        assert spaces
        context.pre_tuning(
            max_trials=4, num_trials_per_iter=4, design_spaces=spaces,
            database=ms.database.MemoryDatabase(), cost_model=None,
        )  # fmt: skip
        assert len(context.generate_measure_candidates() or []) == 4


@needs_nvcc
def test_tuning_candidates_are_built_like_artifacts(zoo_dir: Path) -> None:
    """`tvmflow tune`'s builder makes each candidate a library with an nvcc-built fatbin for
    the preset's arch, so it is measured as the artifact will run it (and needs no NVRTC)."""
    from tvmflow.tune import build_candidate, export_candidate

    preset = resolve_preset("cuda-sm86")
    target = tvm.target.Target(preset.target)
    mod = to_relax(load_onnx(zoo_dir / "mlp.onnx", ZOO_SHAPES["mlp"]))
    mod = apply_default_schedules(fuse(mod, target), target)
    kernel = next(f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    candidate = tvm.IRModule({"main": kernel.with_attr("global_symbol", "main")})
    library = Path(export_candidate(preset, build_candidate(candidate, target, None)))
    (module,) = cuda.device_modules(cuda.library_blob(library))
    assert module.fmt == "fatbin"
    assert cuda.FatbinEntry("sass", 86) in cuda.fatbin_entries(module.code)
    shutil.rmtree(library.parent)


def test_tuning_a_cuda_preset_without_a_gpu_exits_2(
    zoo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if tvm.cuda(0).exist:
        pytest.skip("a GPU is present: candidates can be measured here")
    args = ["tune", str(zoo_dir / "mlp.onnx"), "-t", "cuda-sm90", "--log", str(tmp_path / "l")]
    assert main([*args, "--input-shape", "x=4,64"]) == 2
    err = capsys.readouterr().err
    assert "target 'cuda-sm90' does not run on this machine" in err and "--rpc-tracker" in err


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_artifact_runs_and_matches_onnxruntime(
    zoo_dir: Path, tmp_path: Path, precision: str
) -> None:
    """On a GPU host: compile for this GPU's preset, verify against onnxruntime, reload."""
    from tvmflow.runtime import load

    have = cuda.arch_number("sm_" + str(tvm.cuda(0).compute_version).replace(".", ""))
    presets = [p for p in targets.builtin_presets().values() if p.device == "cuda"]
    preset = max(
        (p for p in presets if cuda.arch_number(str(p.target["arch"])) <= have),
        key=lambda p: cuda.arch_number(str(p.target["arch"])),
    )
    artifact = _build(zoo_dir, "resnet_block", preset.name, tmp_path / "a", precision=precision)
    assert artifact.manifest.accuracy is not None  # verified on the GPU by compile
    feeds = random_inputs(artifact.manifest.inputs, seed=1)
    got = load(artifact.directory).run(feeds)
    (acc,) = compare(got, onnxruntime_outputs(zoo_dir / "resnet_block.onnx", feeds))
    assert acc.cosine > 0.999
