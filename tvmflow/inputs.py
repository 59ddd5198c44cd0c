"""Model inputs: seeded random tensors and user-supplied .npy/.npz files, checked against specs."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tvmflow.dtypes import FLOAT_STORAGE, INT_STORAGE, numpy_dtype
from tvmflow.errors import TvmflowError
from tvmflow.manifest import FrozenInput, TensorSpec, check_writable, write_atomic


def random_inputs(specs: Sequence[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: N(0,1) floats (float8/bfloat16 too); integers and bools in {0, 1};
    rank-0 specs get 0-d arrays.

    Integer inputs are usually ids, masks or token types: {0, 1} is in range for all of them,
    where a wider range would index past a small embedding table.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        dtype = numpy_dtype(spec.dtype)
        if dtype.kind == "f" or spec.dtype in FLOAT_STORAGE or spec.dtype == "bfloat16":
            values = rng.standard_normal(spec.shape)
            values = np.abs(values) if spec.dtype == "float8_e8m0fnu" else values  # no sign
            out[spec.name] = np.asarray(values.astype(np.float32), dtype)
        elif dtype.kind in "iub" or spec.dtype in INT_STORAGE:
            out[spec.name] = np.asarray(rng.integers(0, 2, size=spec.shape), dtype)
        else:
            raise TvmflowError(f"cannot make random data for input {spec.name!r} of {dtype}")
    return out


def check_inputs(
    arrays: Mapping[str, np.ndarray],
    specs: Sequence[TensorSpec],
    frozen: Sequence[FrozenInput] = (),
) -> None:
    """Names, shapes and dtypes must match exactly; the message shows the expected signature."""
    expected = ", ".join(s.describe() for s in specs)
    names = {s.name for s in specs}
    problems = []
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    baked = frozen_given(arrays, frozen)
    if baked:
        problems.append(baked)
    extra = sorted(set(arrays) - names - {f.spec.name for f in frozen})
    if extra:
        problems.append(f"unknown {', '.join(extra)}")
    for spec in specs:
        arr = arrays.get(spec.name)
        if arr is None:
            continue
        if tuple(arr.shape) != spec.shape or np.dtype(arr.dtype).name != spec.dtype:
            got = f"{np.dtype(arr.dtype).name}[{','.join(map(str, arr.shape))}]"
            problems.append(f"{spec.name} is {got}")
    if problems:
        raise TvmflowError(
            f"inputs do not match the model: {'; '.join(problems)}; expected {expected}"
        )


def frozen_given(names: Iterable[str], frozen: Sequence[FrozenInput]) -> str:
    """'' or why passing a frozen input is refused: its value is compiled into the library."""
    given = set(names)
    baked = [f for f in frozen if f.spec.name in given]
    if not baked:
        return ""
    return (
        f"{', '.join(f.spec.name for f in baked)} was frozen at compile time "
        f"(--freeze {' '.join(f.describe() for f in baked)}): drop it, or recompile without "
        "--freeze to pass it"
    )


def load_inputs(
    files: Mapping[str, Path] | None = None, npz: Path | None = None
) -> dict[str, np.ndarray]:
    """Arrays from NAME=FILE.npy pairs and/or one .npz file (names are the npz keys)."""
    arrays: dict[str, np.ndarray] = {}
    if npz is not None:
        arrays.update(_read_npz(Path(npz)))
    for name, path in (files or {}).items():
        if name in arrays:
            raise TvmflowError(
                f"input {name!r} is given twice: in {npz} and as --input {name}={path}; give "
                "each input once"
            )
        arrays[name] = _read_npy(Path(path))
    return arrays


_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            raise TvmflowError(
                f"--inputs {path} is an .npy file; pass an .npz archive (np.savez) or use "
                "--input NAME=FILE.npy"
            )
        with data:
            return {key: native_byte_order(data[key]) for key in data.files}
    except _READ_ERRORS as exc:
        raise TvmflowError(f"cannot read input file {path}: {exc}") from exc


def _read_npy(path: Path) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise TvmflowError(f"cannot read input file {path}: {exc}") from exc
    if not isinstance(data, np.ndarray):
        data.close()
        raise TvmflowError(
            f"--input {path} is an .npz archive; pass an .npy file (np.save) or use --inputs"
        )
    return native_byte_order(data)


def native_byte_order(array: np.ndarray) -> np.ndarray:
    """The array in this machine's byte order (a big-endian .npy is converted, not refused)."""
    if array.dtype.byteorder not in "=|":
        return array.astype(array.dtype.newbyteorder("="))
    return array


def nonfinite_counts(arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    """NaN/Inf values per float input: legal, but worth a warning (outputs will be NaN)."""
    counts = {}
    for name, array in arrays.items():
        if np.asarray(array).dtype.kind in "fc":
            count = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            if count:
                counts[name] = count
    return counts


def check_output_file(path: Path) -> None:
    """Before running: `-o` must be a new file or an .npz archive to replace, somewhere
    writable (missing parent directories are created)."""
    if path.is_dir():
        raise TvmflowError(f"-o {path} is a directory; pass a file name such as out.npz")
    if path.exists() and not zipfile.is_zipfile(path):
        raise TvmflowError(
            f"-o {path} exists and is not an .npz archive; pass a new file name (only an "
            "earlier outputs file is replaced)"
        )
    check_writable(path, "-o")


def save_outputs(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays as an .npz archive at exactly `path` (np.savez would append .npz)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    try:
        write_atomic(path, buffer.getvalue())
    except OSError as exc:
        raise TvmflowError(f"cannot write {path}: {exc.strerror}; pass another -o") from exc
