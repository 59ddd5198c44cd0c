"""Runtime: load an artifact directory and run it, importing TVM's runtime library only.

This is the module production services import. It never imports onnx, TVM's compiler
library or any other tvmflow stage: when TVM is not yet imported in the process it sets
`TVM_USE_RUNTIME_LIB=1`, so only `libtvm_runtime.so` is loaded. Before anything is loaded,
the manifest is checked (format version, machine, CPU features) and the sha256 of the library
and of the weights file are compared with the manifest, so a tampered or foreign file is
refused, not executed. The weights are mapped once and passed to every call as arguments
after the model's inputs: on the CPU TVM reads them in place (no copy), on a GPU they are
copied to the device once.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tvmflow import weights
from tvmflow.cuda import check_gpu
from tvmflow.dtypes import from_storage, to_storage
from tvmflow.errors import TvmflowError
from tvmflow.inputs import check_inputs, native_byte_order
from tvmflow.manifest import (
    LIBRARY_NAME,
    FrozenInput,
    Manifest,
    TensorSpec,
    read_manifest,
    sha256_file,
)
from tvmflow.targets import host_mismatch


def _import_tvm() -> Any:
    """Import TVM, runtime library only unless the process already has the full TVM."""
    if "tvm" not in sys.modules:
        os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    import tvm

    return tvm


def check_compatible(manifest: Manifest, directory: Path) -> None:
    """Refuse artifacts this machine cannot run, saying why."""
    why = host_mismatch(manifest.arch, manifest.cpu_features)
    if why is not None:
        raise TvmflowError(
            f"{directory} was built for {manifest.arch} (preset {manifest.preset}): it {why}; "
            "compile it for a preset this machine supports (`tvmflow targets` lists them)"
        )


def _device(tvm: Any, manifest: Manifest, directory: Path) -> Any:
    if manifest.device == "cpu":
        return tvm.cpu(0)
    if manifest.device == "cuda":
        _load_cuda_runtime(tvm)
        dev = tvm.cuda(0)
        if not dev.exist:
            raise TvmflowError(
                f"{directory} is a CUDA artifact (preset {manifest.preset}) but no CUDA GPU is "
                "visible on this machine: run it on a GPU host, or compile for a CPU preset "
                "(e.g. --target x86)"
            )
        check_gpu(str(dev.compute_version), str(manifest.target.get("arch")), str(directory))
        return dev
    raise TvmflowError(f"{directory}: unknown device {manifest.device!r} in manifest")


def _load_cuda_runtime(tvm: Any) -> None:
    """TVM's CUDA runtime is a separate library; it must be loaded before a CUDA artifact."""
    lib = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    try:
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise TvmflowError(
            f"cannot load TVM's CUDA runtime ({exc}); CUDA artifacts need a GPU host with the "
            "NVIDIA driver (libcuda.so.1) and the CUDA 13 runtime (libcudart.so.13)"
        ) from exc


class CompiledModel:
    """A loaded artifact. `run` is safe to call from several threads at once."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        library: Any,
        device: Any,
        weight_tensors: list[Any],
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self._library = library
        self._device = device
        self._weights = weight_tensors  # shared by every thread's VM: kernels only read them
        self._local = threading.local()

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.outputs

    @property
    def frozen(self) -> tuple[FrozenInput, ...]:
        """Inputs compiled in as constants (`--freeze`): `run` refuses them."""
        return self.manifest.frozen

    def _vm(self) -> Any:
        """One VM per calling thread: a VM holds per-call registers and is not reentrant."""
        vm = getattr(self._local, "vm", None)
        if vm is None:
            vm = self._library["vm_load_executable"]()
            dev, host = self._device, _import_tvm().cpu(0)
            vm["vm_initialization"](
                dev.dlpack_device_type(), dev.index, 2, host.dlpack_device_type(), 0, 2
            )
            self._local.vm = vm
        return vm

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on named numpy arrays; returns named numpy arrays."""
        check_inputs(inputs, self.inputs, self.manifest.frozen)
        tvm = _import_tvm()
        args = [
            # np.asarray keeps a rank-0 input 0-d (ascontiguousarray would make it shape (1,))
            tvm.runtime.tensor(
                np.asarray(to_storage(native_byte_order(np.asarray(inputs[s.name]))), order="C"),
                self._device,
            )
            for s in self.inputs
        ]
        try:
            result = self._vm()["main"](*args, *self._weights)
        except Exception as exc:
            if not _is_signature_error(exc):
                raise
            raise self._signature_mismatch(str(exc).strip().splitlines()[-1]) from exc
        values = [result] if hasattr(result, "numpy") else list(result)
        outputs = [
            from_storage(v.numpy(), s.dtype) for v, s in zip(values, self.outputs, strict=False)
        ]
        got = tuple((tuple(o.shape), o.dtype.name) for o in outputs)
        fits = [
            s.accepts(shape, dtype) for s, (shape, dtype) in zip(self.outputs, got, strict=False)
        ]
        if len(got) != len(self.outputs) or not all(fits):
            shown = ", ".join(f"{dtype}{list(shape)}" for shape, dtype in got)
            raise self._signature_mismatch(f"it returned {shown}")
        return {s.name: o for s, o in zip(self.outputs, outputs, strict=True)}

    def run_on_device(self, tensors: Sequence[Any]) -> Any:
        """Run on TVM tensors already on the model's device, in input order, without numpy
        copies or checks (for timing device-resident calls); returns what the VM returns."""
        return self._vm()["main"](*tensors, *self._weights)

    def _signature_mismatch(self, detail: str) -> TvmflowError:
        """The library disagrees with the manifest it was checked against: an edited manifest."""
        return TvmflowError(
            f"{self.directory / LIBRARY_NAME} does not have the signature its manifest.json "
            f"describes ({detail[:200]}): the manifest was edited or belongs to another build; "
            "recompile the artifact"
        )

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        return self.run(inputs)

    def __repr__(self) -> str:
        sig = ", ".join(s.describe() for s in self.inputs)
        return f"CompiledModel({str(self.directory)!r}, preset={self.manifest.preset}, ({sig}))"


def _is_signature_error(exc: Exception) -> bool:
    """The VM's own checks of main's arguments (count, dtype, shape) failed."""
    text = str(exc)
    return "ErrorContext(fn=main, loc=param" in text or "Invoking function main expects" in text


# TVM's AffinityMode kSpecifyThreadShareAllCore: workers may run on every allowed CPU. The
# default mode (kBig) pins the calling thread to one core, and every thread the service
# starts afterwards inherits that pin.
_SHARE_ALL_CORES = -3


def _size_thread_pool(tvm: Any, num_threads: int) -> None:
    """Resize TVM's CPU thread pool without pinning the caller's threads."""
    cpus = [str(c) for c in sorted(os.sched_getaffinity(0))]
    tvm.get_global_func("runtime.config_threadpool")(_SHARE_ALL_CORES, num_threads, cpus)


def _check_num_threads(num_threads: int) -> None:
    """1 .. this machine's logical CPUs: more threads than CPUs only adds contention."""
    cpus = os.cpu_count() or 1
    if isinstance(num_threads, bool) or not isinstance(num_threads, int):
        raise TvmflowError(f"num_threads must be an int, not {num_threads!r}")
    if not 1 <= num_threads <= cpus:
        raise TvmflowError(
            f"num_threads={num_threads} is out of range: give 1 to {cpus} (this machine's "
            "logical CPUs), or None for one per physical core"
        )


def configure_threads(num_threads: int) -> None:
    """Size TVM's CPU thread pool for the calling thread.

    TVM keeps one worker pool per calling thread, so `load(num_threads=)` sizes only the
    loading thread's: a service that runs models from a thread pool calls this once in each
    of its threads (e.g. as the pool's initializer).
    """
    _check_num_threads(num_threads)
    _size_thread_pool(_import_tvm(), int(num_threads))


def load(directory: str | Path, num_threads: int | None = None) -> CompiledModel:
    """Check and load an artifact directory written by `tvmflow compile`.

    `num_threads` sets the size of TVM's CPU thread pool (default: physical cores).
    """
    directory = Path(directory)
    if num_threads is not None:
        _check_num_threads(num_threads)
    manifest = read_manifest(directory)
    check_compatible(manifest, directory)
    library_path = directory / LIBRARY_NAME
    _check_sha256(library_path, manifest.library_sha256)
    tvm = _import_tvm()
    if num_threads is not None:
        _size_thread_pool(tvm, int(num_threads))
    device = _device(tvm, manifest, directory)
    tensors = weight_tensors(directory, manifest, device)
    library = tvm.runtime.load_module(str(library_path))
    return CompiledModel(directory, manifest, library, device, tensors)


def weight_tensors(directory: Path, manifest: Manifest, device: Any) -> list[Any]:
    """The artifact's weights as TVM tensors on `device`, in argument order, after checking
    the file's sha256 (none for a format-1 artifact: its weights are inside the library).

    On the CPU each tensor is a view of the file's mapping (DLPack, no copy); an array whose
    data is not 64-byte aligned, as TVM's kernels assume, is copied instead. Members stored
    as raw unsigned integers are viewed as their dtype (same bytes, no copy)."""
    info = manifest.weights
    if info is None:
        return []
    path = directory / info.file
    if Path(info.file).name != info.file:
        raise TvmflowError(f"{directory}: weights file {info.file!r} is not a file name")
    _check_sha256(path, info.sha256)
    tvm = _import_tvm()
    on_cpu = device.dlpack_device_type() == tvm.cpu(0).dlpack_device_type()
    tensors = []
    for index, array in enumerate(weights.load(path, info.count)):
        if array.ctypes.data % weights.ALIGNMENT == 0:
            tensor = tvm.runtime.from_dlpack(array)
        else:
            tensor = tvm.runtime.tensor(np.asarray(array, order="C"))
        dtype = info.raw_dtypes.get(weights.member_name(index))
        if dtype is not None:
            tensor = tensor._create_view(array.shape, dtype)
        tensors.append(tensor if on_cpu else tensor.copyto(device))
    return tensors


def _check_sha256(path: Path, expected: str) -> None:
    if not path.is_file():
        raise TvmflowError(f"{path.parent} has no {path.name}; recompile the artifact")
    if sha256_file(path) != expected:
        raise TvmflowError(
            f"{path} does not match the sha256 in its manifest (modified or corrupted); "
            "refusing to load it: recompile or re-copy the artifact"
        )
