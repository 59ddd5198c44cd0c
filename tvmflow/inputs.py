"""Model inputs: seeded random tensors and user-supplied .npy/.npz files, checked against specs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.manifest import TensorSpec


def random_inputs(specs: Sequence[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: N(0,1) floats; integers and bools in {0, 1}; rank-0 specs get 0-d arrays.

    Integer inputs are usually ids, masks or token types: {0, 1} is in range for all of them,
    where a wider range would index past a small embedding table.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            out[spec.name] = np.asarray(rng.standard_normal(spec.shape), dtype)
        elif dtype.kind in "iub":
            out[spec.name] = np.asarray(rng.integers(0, 2, size=spec.shape), dtype)
        else:
            raise TvmflowError(f"cannot make random data for input {spec.name!r} of {dtype}")
    return out


def check_inputs(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> None:
    """Names, shapes and dtypes must match exactly; the message shows the expected signature."""
    expected = ", ".join(s.describe() for s in specs)
    names = {s.name for s in specs}
    problems = []
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    extra = sorted(set(arrays) - names)
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


def load_inputs(
    files: Mapping[str, Path] | None = None, npz: Path | None = None
) -> dict[str, np.ndarray]:
    """Arrays from NAME=FILE.npy pairs and/or one .npz file (names are the npz keys)."""
    arrays: dict[str, np.ndarray] = {}
    try:
        if npz is not None:
            with np.load(npz, allow_pickle=False) as data:
                arrays.update({key: data[key] for key in data.files})
        for name, path in (files or {}).items():
            arrays[name] = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise TvmflowError(f"cannot read input file: {exc}") from exc
    return arrays
