"""The artifact's weights file: every constant of the model, once, outside the library.

Constants serialized into the `.so` are held twice once TVM loads it (the mapped file and a
heap copy of its constant section). tvmflow instead passes the weights to the model as
arguments and stores them in `weights.npz`: a plain, uncompressed NumPy archive (`np.load`
reads it) whose members are written so that every array's data starts on a 64-byte boundary
(an alignment extra field, as Android's zipalign pads). The runtime maps the file once,
copy-on-write, and hands TVM views into the mapping without copying: each weight is in
memory once, and processes on one host share the pages. Runtime side: standard library and
numpy only (the emulated aarch64 loader imports it too).
"""

from __future__ import annotations

import io
import mmap
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tvmflow.errors import TvmflowError

WEIGHTS_NAME = "weights.npz"
ALIGNMENT = 64  # TVM's kernels assume 64-byte aligned buffers (tvm.runtime.from_dlpack checks)
_ALIGN_FIELD = 0xD935  # zip extra field id of zipalign's padding: readers skip it
# the zip format's local file header (APPNOTE 4.3.7); fields 10, 11: name and extra lengths
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_NAME_LENGTH, _EXTRA_LENGTH = 10, 11


def member_name(index: int) -> str:
    """The archive key of the index-th weight (the model's extra arguments, in order)."""
    return f"w{index}"


def save(path: Path, arrays: Sequence[np.ndarray]) -> dict[str, str]:
    """Write `arrays` as an uncompressed .npz whose array data is 64-byte aligned.

    Arrays of a dtype the .npy format cannot name (ml_dtypes' bfloat16, float8_*) are stored
    as unsigned integers of the same width; returns {member: dtype} for those, for the
    manifest (the loader views them as that dtype again)."""
    raw: dict[str, str] = {}
    with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
        for index, array in enumerate(arrays):
            array = np.asarray(array, order="C")
            if not _npy_names(array.dtype):
                raw[member_name(index)] = str(array.dtype)
                array = array.view(f"u{array.dtype.itemsize}")
            data = io.BytesIO()
            np.lib.format.write_array(data, array, allow_pickle=False)
            info = zipfile.ZipInfo(member_name(index) + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            # the .npy header is padded to a multiple of 64 (numpy's ARRAY_ALIGN), so aligning
            # the member's start aligns its array data
            header = _LOCAL_HEADER.size + len(info.filename) + 4
            pad = -(f.tell() + header) % ALIGNMENT
            info.extra = struct.pack("<HH", _ALIGN_FIELD, pad) + bytes(pad)
            archive.writestr(info, data.getvalue())
    return raw


def _npy_names(dtype: np.dtype) -> bool:
    """Whether an .npy header records `dtype` faithfully (ml_dtypes' types read back as void)."""
    descr = np.lib.format.dtype_to_descr(dtype)
    return bool(np.lib.format.descr_to_dtype(descr) == dtype)


def load(path: Path, count: int) -> list[np.ndarray]:
    """The `count` weights of `path` as views of one copy-on-write mapping of the file (the
    kernels only read them, so the pages stay shared with the page cache)."""
    with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
        members = archive.infolist()
        names = [m.filename for m in members]
        expected = [member_name(i) + ".npy" for i in range(count)]
        if names != expected:
            raise TvmflowError(
                f"{path} holds {names[:3]}... where the manifest expects {count} weights "
                f"{expected[:3]}...; recompile the artifact"
            )
        if any(m.compress_type != zipfile.ZIP_STORED for m in members):
            raise TvmflowError(f"{path} is compressed; recompile the artifact")
        if count == 0:
            return []
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        return [_array(mapped, m.header_offset, path) for m in members]


def _array(mapped: mmap.mmap, header_offset: int, path: Path) -> np.ndarray:
    """The .npy member whose local zip header starts at `header_offset`, as a view."""
    end = header_offset + _LOCAL_HEADER.size
    fields = _LOCAL_HEADER.unpack(mapped[header_offset:end])
    start = end + fields[_NAME_LENGTH] + fields[_EXTRA_LENGTH]
    header = io.BytesIO(mapped[start : start + 65536])
    try:
        version = np.lib.format.read_magic(header)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read(header)
    except ValueError as exc:
        raise TvmflowError(f"{path} is not a weights archive ({exc}); recompile it") from exc
    if fortran_order or dtype.hasobject:
        raise TvmflowError(f"{path} holds an array TVM cannot take; recompile the artifact")
    offset = start + header.tell()
    count = int(np.prod(shape, dtype=np.int64))
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(shape)
