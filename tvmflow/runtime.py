"""Runtime: load an artifact directory and run it, without TVM's Python package.

This is the module production services import. It never imports `tvm`, onnx or any other
tvmflow stage: it loads TVM's runtime library (`libtvm_runtime.so`, from the installed `tvm`
package's `lib/` folder, found without importing the package) into `tvm_ffi`, and drives the
Relax VM through the global functions that library registers. A process that serves models
holds tvm_ffi, the runtime library and numpy, about 35 MB less than `import tvm`. Before
anything is loaded, the manifest is checked (format version, machine, CPU features) and the
sha256 of the library and of the weights file are compared with the manifest, so a tampered
or foreign file is refused, not executed. The weights are mapped once and passed to every
call as arguments after the model's inputs: on the CPU TVM reads them in place (no copy), on a
GPU they are copied to the device once. Per call, what the manifest fixes (names, shapes,
dtypes) is checked against precomputed slots; a big input whose memory already fits is passed
in place, any other is copied into a buffer its thread keeps; each output is copied out once
(`scripts/call_overhead.py` times run() against the VM call alone).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import tvm_ffi

from tvmflow import weights
from tvmflow.dtypes import from_storage, is_narrow, to_storage
from tvmflow.errors import TvmflowError
from tvmflow.inputs import check_inputs, native_byte_order
from tvmflow.manifest import (
    DYNAMIC,
    LIBRARY_NAME,
    FrozenInput,
    Manifest,
    TensorSpec,
    read_manifest,
    sha256_file,
)
from tvmflow.targets import DEVICES, host_mismatch

RUNTIME_LIBRARY = "libtvm_runtime.so"
# TVM's runtime extras: the sort kernels TopK / argsort call (tvm.contrib.sort.*), random fills
RUNTIME_EXTRA_LIBRARY = "libtvm_runtime_extra.so"
CUDA_RUNTIME_LIBRARY = "libtvm_runtime_cuda.so"  # TVM's CUDA device API, a separate library
_POOLED_ALLOCATOR = 2  # the Relax VM's allocator kinds: 1 naive, 2 pooled (TVM's default)
_DEVICE_EXISTS, _COMPUTE_VERSION = 0, 4  # TVM's DeviceAttrKind (runtime.GetDeviceAttr)


def _tvm_lib_dir() -> Path:
    """The installed `tvm` package's `lib/` folder, found without importing the package."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise TvmflowError(
            "TVM's runtime library is not installed: pip install apache-tvm==0.27.0.post1"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


@functools.cache
def load_runtime_library() -> None:
    """Load `libtvm_runtime.so` and its extras once, globally, so model libraries resolve
    against them and their global functions (the Relax VM, tensors, the thread pool, the sort
    kernels TopK calls) reach `tvm_ffi`. Where `tvm` is already imported this finds the
    copies it loaded."""
    ctypes.CDLL(str(_tvm_lib_dir() / RUNTIME_LIBRARY), mode=ctypes.RTLD_GLOBAL)
    extra = _tvm_lib_dir() / RUNTIME_EXTRA_LIBRARY
    if extra.exists():  # in every TVM 0.27 wheel; a runtime-only install may leave it out
        ctypes.CDLL(str(extra), mode=ctypes.RTLD_GLOBAL)


@functools.cache
def _global(name: str) -> tvm_ffi.Function:
    load_runtime_library()
    return tvm_ffi.get_global_func(name)


def _call(name: str, *args: Any) -> Any:
    """Call one of the global functions TVM's runtime library registers."""
    return _global(name)(*args)


def _numpy_dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16, float8_*: ml_dtypes' types, which numpy cannot name
        return np.dtype(getattr(ml_dtypes, name))


def check_compatible(manifest: Manifest, directory: Path) -> None:
    """Refuse artifacts this machine cannot run, saying why (`targets.host_mismatch`)."""
    if manifest.device not in DEVICES:
        raise TvmflowError(
            f"{directory}: unknown device {manifest.device!r} in manifest; recompile the artifact"
        )
    why = host_mismatch(manifest.arch, manifest.cpu_features, manifest.gpu_arch)
    if why is not None:
        raise TvmflowError(
            f"{directory} was built for {manifest.gpu_arch or manifest.arch} (preset "
            f"{manifest.preset}): "
            f"it {why}; run it on such a machine, or compile it for a preset this one supports "
            "(`tvmflow targets` lists them)"
        )


def gpu_compute_version() -> str | None:
    """CUDA GPU 0's compute capability ("9.0"); None when no GPU is visible or TVM's CUDA
    runtime cannot load (no NVIDIA driver)."""
    try:
        _load_cuda_runtime()
    except TvmflowError:
        return None
    kind = tvm_ffi.device("cuda", 0).dlpack_device_type()
    if not _call("runtime.GetDeviceAttr", kind, 0, _DEVICE_EXISTS):
        return None
    return str(_call("runtime.GetDeviceAttr", kind, 0, _COMPUTE_VERSION))


def _load_cuda_runtime() -> None:
    """TVM's CUDA runtime is a separate library; it must be loaded before a CUDA artifact."""
    load_runtime_library()
    try:
        ctypes.CDLL(str(_tvm_lib_dir() / CUDA_RUNTIME_LIBRARY), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise TvmflowError(
            f"cannot load TVM's CUDA runtime ({exc}); CUDA artifacts need a GPU host with the "
            "NVIDIA driver (libcuda.so.1) and the CUDA 13 runtime (libcudart.so.13)"
        ) from exc


def _is_cpu(device: tvm_ffi.Device) -> bool:
    return device.dlpack_device_type() == tvm_ffi.device("cpu", 0).dlpack_device_type()


def _empty(shape: Sequence[int], dtype: str, device: tvm_ffi.Device) -> tvm_ffi.Tensor:
    shape_obj = tvm_ffi.Shape(tuple(int(d) for d in shape))
    return _call("runtime.TVMTensorAllocWithScope", shape_obj, tvm_ffi.dtype(dtype), device, None)


def to_tensor(array: np.ndarray, device: tvm_ffi.Device) -> tvm_ffi.Tensor:
    """A copy of a numpy array in a new TVM tensor on `device` (64-byte aligned, as TVM's
    kernels assume)."""
    array = np.asarray(array, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
    tensor = _empty(array.shape, array.dtype.name, device)
    data = ctypes.c_void_p(array.ctypes.data)
    _call("runtime.TVMTensorCopyFromBytes", tensor, data, array.nbytes)
    return tensor


def to_numpy(tensor: tvm_ffi.Tensor) -> np.ndarray:
    """A numpy copy of a TVM tensor on any device (bfloat16 and float8 as ml_dtypes arrays)."""
    array = np.empty(tuple(tensor.shape), _numpy_dtype(str(tensor.dtype)))
    data = ctypes.c_void_p(array.ctypes.data)
    _call("runtime.TVMTensorCopyToBytes", tensor, data, array.nbytes)
    return array


# Inputs at least this big are passed to the VM in place (DLPack) when their memory already
# fits (64-byte aligned, C-contiguous, writable, native byte order); smaller ones are copied
# into a per-thread buffer, which costs less than checking where a numpy array's data starts.
ZERO_COPY_BYTES = 64 * 1024
_NUMPY_DLPACK_KINDS = "biuf"  # what numpy's DLPack can share: bool, ints, floats (not ml_dtypes)


@dataclass(frozen=True)
class _Slot:
    """One input or output, checked and converted per call: what can be precomputed."""

    spec: TensorSpec
    dtype: np.dtype  # the dtype the caller passes or gets
    shared: bool  # a CPU tensor of this dtype is a numpy array without a copy (DLPack)
    static: bool  # no dynamic dim: the shape must equal `spec.shape`


def _slot(spec: TensorSpec, cpu: bool) -> _Slot:
    dtype = _numpy_dtype(spec.dtype)
    ordinary = not is_narrow(spec.dtype) and dtype.kind in _NUMPY_DLPACK_KINDS
    return _Slot(spec, dtype, cpu and ordinary, DYNAMIC not in spec.shape)


class _PerThread(threading.local):
    """One calling thread's VM (a VM holds per-call registers and is not reentrant), its
    `main`, and the buffers small inputs are copied into."""

    main: Any = None
    staging: dict[int, tuple[tvm_ffi.Tensor, np.ndarray]]

    def __init__(self) -> None:
        self.staging = {}


class CompiledModel:
    """A loaded artifact. `run` is safe to call from several threads at once."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        library: tvm_ffi.Module,
        device: tvm_ffi.Device,
        weight_tensors: list[tvm_ffi.Tensor],
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self._library = library
        self._device = device
        self._weights = weight_tensors  # shared by every thread's VM: kernels only read them
        self._local = _PerThread()
        cpu = _is_cpu(device)
        self._in = tuple(_slot(s, cpu) for s in manifest.inputs)
        self._out = tuple(_slot(s, cpu) for s in manifest.outputs)

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

    def _main(self) -> tvm_ffi.Function:
        """This thread's VM's `main` (the VM is made on a thread's first call)."""
        local = self._local
        if local.main is None:
            vm = self._library["vm_load_executable"]()
            dev, host = self._device, tvm_ffi.device("cpu", 0)
            vm["vm_initialization"](
                *(dev.dlpack_device_type(), dev.index, _POOLED_ALLOCATOR),
                *(host.dlpack_device_type(), host.index, _POOLED_ALLOCATOR),
            )
            local.main = vm["main"]
        return local.main

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on named numpy arrays; returns named numpy arrays (new ones, owned by the
        caller: the VM's memory is reused by the next call)."""
        args = self._arguments(inputs)
        try:
            result = self._main()(*args, *self._weights)
        except Exception as exc:
            if not _is_signature_error(exc):
                raise
            raise self._signature_mismatch(str(exc).strip().splitlines()[-1]) from exc
        if isinstance(result, tvm_ffi.Tensor):
            values = [result]
        else:  # an ffi.Array: its Python iterator makes two FFI calls per item, this one
            values = [_global("ffi.ArrayGetItem")(result, i) for i in range(len(result))]
        if len(values) != len(self._out):
            raise self._signature_mismatch(
                f"it returned {len(values)} outputs, the manifest lists {len(self._out)}"
            )
        return {s.spec.name: self._output(s, v) for s, v in zip(self._out, values, strict=True)}

    def _arguments(self, inputs: Mapping[str, np.ndarray]) -> list[tvm_ffi.Tensor]:
        """The VM's input arguments; arrays that match the inputs exactly take the quick way,
        anything else is checked first (the mismatch named) and converted."""
        if len(inputs) == len(self._in):
            args = []
            for index, slot in enumerate(self._in):
                array = inputs.get(slot.spec.name)
                if (
                    type(array) is not np.ndarray
                    or array.shape != slot.spec.shape
                    or array.dtype != slot.dtype
                ):
                    break
                args.append(self._argument(index, slot, array))
            else:
                return args
        check_inputs(inputs, self.inputs, self.manifest.frozen)
        return [
            self._argument(index, slot, np.asarray(inputs[slot.spec.name]))
            for index, slot in enumerate(self._in)
        ]

    def _argument(self, index: int, slot: _Slot, array: np.ndarray) -> tvm_ffi.Tensor:
        """One checked input as a tensor the VM reads: the array itself when its memory fits
        and it is big enough to be worth it, else a copy in this thread's buffer for it (on
        a GPU: a new device tensor)."""
        if not slot.shared:
            return to_tensor(to_storage(native_byte_order(array)), self._device)
        if array.nbytes >= ZERO_COPY_BYTES and _shareable(array):
            return tvm_ffi.from_dlpack(array)
        staged = self._local.staging.get(index)
        if staged is None:
            tensor = _empty(slot.spec.shape, slot.spec.dtype, self._device)
            staged = self._local.staging[index] = (tensor, np.from_dlpack(tensor))
        staged[1][...] = array  # converts byte order and strides
        return staged[0]

    def _output(self, slot: _Slot, value: tvm_ffi.Tensor) -> np.ndarray:
        """A numpy copy of one VM output (never a view: the next call may overwrite it),
        checked against the manifest's output."""
        if slot.shared:
            out = _owned_copy(np.from_dlpack(value))
        else:
            out = from_storage(to_numpy(value), slot.spec.dtype)
        if out.dtype != slot.dtype or not (
            out.shape == slot.spec.shape
            if slot.static
            else slot.spec.accepts(out.shape, out.dtype.name)
        ):
            got = f"{out.dtype.name}{list(out.shape)}"
            raise self._signature_mismatch(f"it returned {got} for {slot.spec.describe()}")
        return out

    def device_inputs(self, inputs: Mapping[str, np.ndarray]) -> list[tvm_ffi.Tensor]:
        """Named numpy arrays, checked against the inputs, as new tensors on the model's
        device in argument order (for `run_on_device`)."""
        check_inputs(inputs, self.inputs, self.manifest.frozen)
        return [
            to_tensor(to_storage(native_byte_order(np.asarray(inputs[s.name]))), self._device)
            for s in self.inputs
        ]

    def run_on_device(self, tensors: Sequence[tvm_ffi.Tensor]) -> Any:
        """Run on `device_inputs`' tensors without numpy copies or checks (for timing
        device-resident calls); returns what the VM returns (tensors on the device)."""
        return self._main()(*tensors, *self._weights)

    def sync(self) -> None:
        """Wait until the device has finished the work queued on it (a no-op on the CPU)."""
        _call("runtime.Device_StreamSync", self._device, 0)

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


def _owned_copy(view: np.ndarray) -> np.ndarray:
    """A copy of `view`; one of ZERO_COPY_BYTES or more starts on a 64-byte boundary, so
    passing it back in (a decode loop's state, the next model of a pipeline) is not copied
    again (numpy's own allocations are 16-byte aligned)."""
    if view.nbytes < ZERO_COPY_BYTES:
        return view.copy()
    raw = np.empty(view.nbytes + weights.ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % weights.ALIGNMENT
    out = raw[start : start + view.nbytes].view(view.dtype).reshape(view.shape)
    out[...] = view
    return out


def _shareable(array: np.ndarray) -> bool:
    """Whether the VM can read `array`'s memory as it is (TVM's kernels assume 64-byte
    aligned data; DLPack cannot carry read-only or byte-swapped arrays)."""
    flags = array.flags
    return (
        flags.c_contiguous
        and flags.writeable
        and array.dtype.isnative
        and array.ctypes.data % weights.ALIGNMENT == 0
    )


def _is_signature_error(exc: Exception) -> bool:
    """The VM's own checks of main's arguments (count, dtype, shape) failed."""
    text = str(exc)
    return "ErrorContext(fn=main, loc=param" in text or "Invoking function main expects" in text


# TVM's AffinityMode kSpecifyThreadShareAllCore: workers may run on every allowed CPU. The
# default mode (kBig) pins the calling thread to one core, and every thread the service
# starts afterwards inherits that pin.
_SHARE_ALL_CORES = -3


def _size_thread_pool(num_threads: int) -> None:
    """Resize TVM's CPU thread pool without pinning the caller's threads."""
    cpus = [str(c) for c in sorted(os.sched_getaffinity(0))]
    _call("runtime.config_threadpool", _SHARE_ALL_CORES, num_threads, cpus)


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
    _size_thread_pool(int(num_threads))


def load(directory: str | Path, num_threads: int | None = None) -> CompiledModel:
    """Check and load an artifact directory written by `tvmflow compile`.

    `num_threads` sets the size of TVM's CPU thread pool (default: physical cores).
    """
    directory = Path(directory)
    if num_threads is not None:
        _check_num_threads(num_threads)
    manifest = read_manifest(directory)
    if manifest.device == "cuda":
        _load_cuda_runtime()  # first: its failure names the missing driver libraries
    check_compatible(manifest, directory)
    library_path = directory / LIBRARY_NAME
    _check_sha256(library_path, manifest.library_sha256)
    load_runtime_library()
    if num_threads is not None:
        _size_thread_pool(int(num_threads))
    device = tvm_ffi.device(manifest.device, 0)
    tensors = weight_tensors(directory, manifest, device)
    library = tvm_ffi.load_module(str(library_path))
    return CompiledModel(directory, manifest, library, device, tensors)


def weight_tensors(
    directory: Path, manifest: Manifest, device: tvm_ffi.Device
) -> list[tvm_ffi.Tensor]:
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
    load_runtime_library()
    cpu = tvm_ffi.device("cpu", 0)
    tensors = []
    for index, array in enumerate(weights.load(path, info.count)):
        if array.ctypes.data % weights.ALIGNMENT == 0:
            tensor = tvm_ffi.from_dlpack(array, require_alignment=weights.ALIGNMENT)
        else:
            tensor = to_tensor(array, cpu)
        dtype = info.raw_dtypes.get(weights.member_name(index))
        if dtype is not None:  # same bytes, seen as the dtype .npy could not name
            shape = tvm_ffi.Shape(array.shape)
            tensor = _call("runtime.TVMTensorCreateView", tensor, shape, tvm_ffi.dtype(dtype), 0)
        if not _is_cpu(device):
            on_device = _empty(array.shape, str(tensor.dtype), device)
            _call("runtime.TVMTensorCopyFromTo", tensor, on_device)
            tensor = on_device
        tensors.append(tensor)
    return tensors


def _check_sha256(path: Path, expected: str) -> None:
    if not path.is_file():
        raise TvmflowError(f"{path.parent} has no {path.name}; recompile the artifact")
    if sha256_file(path) != expected:
        raise TvmflowError(
            f"{path} does not match the sha256 in its manifest (modified or corrupted); "
            "refusing to load it: recompile or re-copy the artifact"
        )
