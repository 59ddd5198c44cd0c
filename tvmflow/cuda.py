"""CUDA device code: compile TVM's generated CUDA source into a fatbin when the library is made.

TVM 0.27's CUDA codegen hands its CUDA C++ source to the runtime factory in
`libtvm_runtime_cuda.so`. Where that library cannot load (no `libcuda.so.1`: a GPU-less build
box) codegen keeps the source (module fmt "cuda"), and the production host then JIT-compiles
it with NVRTC on every load: seconds per model, and a compiler on the production host. Where
it can load, codegen compiles with whatever `tvm_callback_cuda_compile` does (NVRTC by default).

tvmflow takes one path on every build machine: codegen always keeps the source (the scope
`source_codegen` forces TVM's fallback module), and the export step (`pack_imports`) runs
nvcc on it for the preset's architecture and stores the fatbin in model.so in place of the
source. Loading then needs only the driver: no NVRTC, nvcc or TVM compiler library.

The packed-imports blob inside model.so (symbol `__tvm_ffi__library_bin`) is TVM's module
serialization: `u64 size` + import tree (two u64 vectors) + one `(kind, payload)` per module
(`_lib`, the host code, has no payload); a CUDA payload is `[fmt][function map][code]`. All
strings and byte runs are `u64 length + bytes`, little endian.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvmflow.errors import TvmflowError
from tvmflow.targets import require_tool

if TYPE_CHECKING:
    import tvm

SOURCE_FMT = "cuda"  # TVM's format tag for CUDA C++ source awaiting a compiler
FATBIN_FMT = "fatbin"
FATBIN_MAGIC = 0xBA55ED50
BLOB_SYMBOL = "__tvm_ffi__library_bin"
_FATBIN_KINDS = {1: "ptx", 2: "sass"}


@dataclass(frozen=True)
class DeviceModule:
    """One serialized CUDA module: its code format, kernel names and code bytes."""

    fmt: str
    kernels: tuple[str, ...]
    code: bytes


@dataclass(frozen=True)
class FatbinEntry:
    """One image in a fatbin: "sass" (machine code) or "ptx", and its compute capability."""

    kind: str
    sm: int

    def describe(self) -> str:
        return f"{'sm' if self.kind == 'sass' else 'compute'}_{self.sm}"


def arch_number(arch: str) -> int:
    """The compute capability an artifact needs, as a number: sm_90 and sm_90a -> 90."""
    match = re.fullmatch(r"sm_(\d+)[a-z]?", arch)
    if not match:
        raise TvmflowError(f"CUDA arch {arch!r} is not of the form sm_XY (e.g. sm_90)")
    return int(match.group(1))


def gencode_flags(arch: str) -> list[str]:
    """nvcc flags: machine code for `arch`, plus its PTX so newer GPUs can run it too."""
    arch_number(arch)
    compute = "compute_" + arch.removeprefix("sm_")
    return ["-gencode", f"arch={compute},code={arch}", "-gencode", f"arch={compute},code={compute}"]


def compile_fatbin(source: str, target: tvm.target.Target) -> bytes:
    """nvcc the CUDA source for the target's arch, with the flags TVM itself uses for nvcc
    (TVM runs `nvcc` from PATH: the one we found, e.g. in CUDA_HOME, goes first)."""
    from tvm.support import nvcc as tvm_nvcc

    arch = str(target.attrs["arch"])
    flags = gencode_flags(arch)
    nvcc_dir = require_tool("nvcc", "compiling CUDA kernels").parent
    with target, _environ("PATH", f"{nvcc_dir}{os.pathsep}{os.environ.get('PATH', '')}"):
        try:
            fatbin = tvm_nvcc.compile_cuda(source, "fatbin", flags, compiler="nvcc")
        except RuntimeError as exc:  # nvcc failed: its output is the last part of the message
            tail = str(exc).rsplit("Compilation error:", 1)[-1].strip()
            raise TvmflowError(f"nvcc failed on the CUDA kernels for {arch}: {tail}") from exc
    return bytes(fatbin)


def source_codegen() -> contextlib.AbstractContextManager[None]:
    """Make TVM's CUDA codegen keep the source even where its runtime factory is loaded.

    With `TVM_COMPILE_FORCE_FALLBACK` set, codegen stores CUDA source exactly as on a GPU-less
    machine, so GPU and GPU-less build boxes produce the same nvcc-built artifact.
    """
    return _environ("TVM_COMPILE_FORCE_FALLBACK", "1")


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """Set an environment variable (TVM reads its settings there) for the `with` block."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


class _Reader:
    """Reads TVM's little-endian `u64` / `u64 length + bytes` stream."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated TVM module blob")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def bytes_(self) -> bytes:
        return self.take(self.u64())

    def str_(self) -> str:
        return self.bytes_().decode()


def _pack(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def split_blob(blob: bytes) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    """Packed imports -> (import tree bytes, [(module kind, payload or None for `_lib`)])."""
    r = _Reader(blob)
    size = r.u64()
    if size != len(blob) - 8:
        raise ValueError(f"TVM module blob says {size} bytes, has {len(blob) - 8}")
    rows = [r.u64() for _ in range(r.u64())]
    for _ in range(r.u64()):  # child indices
        r.u64()
    tree = blob[8 : r.pos]
    modules: list[tuple[str, bytes | None]] = []
    for _ in range(len(rows) - 1):
        kind = r.str_()
        modules.append((kind, None if kind == "_lib" else r.bytes_()))
    if r.pos != len(blob):
        raise ValueError("trailing bytes after the last module in the TVM module blob")
    return tree, modules


def join_blob(tree: bytes, modules: list[tuple[str, bytes | None]]) -> bytes:
    body = tree + b"".join(
        _pack(kind.encode()) + (b"" if payload is None else _pack(payload))
        for kind, payload in modules
    )
    return _pack(body)


def _read_cuda_payload(payload: bytes) -> tuple[str, bytes, tuple[str, ...], bytes]:
    """A CUDA module payload -> (fmt, function map bytes, kernel names, code)."""
    r = _Reader(payload)
    fmt = r.str_()
    start, kernels = r.pos, []
    for _ in range(r.u64()):
        kernels.append(r.str_())
        r.str_()  # FunctionInfo.name
        r.take(4 * r.u64())  # arg_types: DLDataType (u8 code, u8 bits, u16 lanes)
        for _ in range(r.u64()):  # launch_param_tags
            r.str_()
        r.take(4 * r.u64())  # arg_extra_tags: int32 enum
    fmap = payload[start : r.pos]
    code = r.bytes_()
    if r.pos != len(payload):
        raise ValueError("unexpected bytes after the code of a CUDA module")
    return fmt, fmap, tuple(kernels), code


def device_modules(blob: bytes) -> list[DeviceModule]:
    """The CUDA modules in a packed-imports blob (as stored in model.so)."""
    _, modules = split_blob(blob)
    out = []
    for kind, payload in modules:
        if kind == "cuda" and payload is not None:
            fmt, _, kernels, code = _read_cuda_payload(payload)
            out.append(DeviceModule(fmt, kernels, code))
    return out


def compile_device_code(blob: bytes, compile_source: Callable[[str], bytes]) -> bytes:
    """Replace every CUDA module's source by `compile_source(source)`, tagged fmt "fatbin"."""
    tree, modules = split_blob(blob)
    rewritten: list[tuple[str, bytes | None]] = []
    for kind, payload in modules:
        if kind == "cuda" and payload is not None:
            fmt, fmap, _, code = _read_cuda_payload(payload)
            if fmt != SOURCE_FMT:
                raise TvmflowError(
                    f"TVM stored CUDA device code as {fmt!r}, expected source to compile with "
                    "nvcc; this TVM build is not the one tvmflow supports"
                )
            fatbin = compile_source(code.decode())
            payload = _pack(FATBIN_FMT.encode()) + fmap + _pack(fatbin)
        rewritten.append((kind, payload))
    return join_blob(tree, rewritten)


def fatbin_entries(fatbin: bytes) -> tuple[FatbinEntry, ...]:
    """The images in a fatbin: header `u32 magic, u16 version, u16 header size, u64 size`,
    then entries `u16 kind, u16 version, u32 header size, u64 payload size, ..., u32 sm at +28`.
    """
    magic, _, header, size = struct.unpack_from("<IHHQ", fatbin, 0)
    if magic != FATBIN_MAGIC:
        raise ValueError("not a CUDA fatbin (bad magic)")
    entries, pos, end = [], header, header + size
    while pos < end:
        kind, _, entry_header, payload = struct.unpack_from("<HHIQ", fatbin, pos)
        (sm,) = struct.unpack_from("<I", fatbin, pos + 28)
        entries.append(FatbinEntry(_FATBIN_KINDS.get(kind, f"kind{kind}"), sm))
        pos += entry_header + payload
    return tuple(entries)


def pack_imports(target: tvm.target.Target) -> Callable[[Any, bool, str, str], str]:
    """An `export_library(fpack_imports=...)` hook that stores nvcc-built device code.

    It does what TVM's default packing does (serialize the imported modules into an object
    file holding `__tvm_ffi__library_bin`) with the CUDA source swapped for a fatbin.
    """

    def pack(mod: Any, is_system_lib: bool, prefix: str, workspace_dir: str) -> str:
        import tvm

        blob = tvm.get_global_func("runtime.ModulePackImportsToTensor")(mod).numpy().tobytes()
        blob = compile_device_code(blob, lambda source: compile_fatbin(source, target))
        host = _host_target_string(mod)
        obj = tvm.get_global_func("codegen.codegen_blob")(blob, is_system_lib, host, prefix)
        path = os.path.join(workspace_dir, f"{prefix}devc.o")
        obj.write_to_file(path)
        return path

    return pack


def _host_target_string(mod: Any) -> str:
    for dso in mod._collect_dso_modules():
        if dso.kind == "llvm":
            return str(dso.get_function("_get_target_string")())
    raise TvmflowError("a CUDA build has no LLVM host module; cannot embed its device code")


def library_blob(library: Path) -> bytes:
    """The packed-imports blob (`__tvm_ffi__library_bin`, size prefix included) of a model.so."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    with open(library, "rb") as f:
        elf = ELFFile(f)
        symbols = elf.get_section_by_name(".dynsym")
        found = (
            symbols.get_symbol_by_name(BLOB_SYMBOL)
            if isinstance(symbols, SymbolTableSection)
            else None
        )
        if not found:
            raise TvmflowError(f"{library} has no {BLOB_SYMBOL}: not a TVM library with imports")
        addr = found[0]["st_value"]
        for section in elf.iter_sections():
            start = section["sh_addr"]
            if section["sh_type"] != "SHT_NOBITS" and start <= addr < start + section["sh_size"]:
                f.seek(section["sh_offset"] + addr - start)
                (size,) = struct.unpack("<Q", f.read(8))
                return struct.pack("<Q", size) + f.read(size)
    raise TvmflowError(f"{library}: {BLOB_SYMBOL} is not in any section with data")


def describe_device_code(library: Path) -> dict[str, Any]:
    """What model.so carries for the GPU; refuses a library that still holds CUDA source."""
    modules = device_modules(library_blob(library))
    if not modules or any(m.fmt != FATBIN_FMT for m in modules):
        formats = sorted({m.fmt for m in modules}) or ["none"]
        raise TvmflowError(
            f"{library} holds CUDA device code as {', '.join(formats)}, not a fatbin; "
            "this is a tvmflow bug, please report it"
        )
    images = sorted({e.describe() for m in modules for e in fatbin_entries(m.code)})
    return {
        "format": FATBIN_FMT,
        "images": images,
        "kernels": sum(len(m.kernels) for m in modules),
        "bytes": sum(len(m.code) for m in modules),
    }


def gpu_mismatch(compute_version: str, arch: str) -> str | None:
    """Why a GPU of `compute_version` ("8.6") cannot run `arch` code (None: it can): sm_XY
    code runs on compute capability >= X.Y (same major through its machine code, newer ones
    through its PTX). `targets.host_mismatch` asks it."""
    need = arch_number(arch)
    if int(compute_version.replace(".", "")) < need:
        return (
            f"needs compute capability {need // 10}.{need % 10} or newer and this GPU has "
            f"compute capability {compute_version}"
        )
    return None
