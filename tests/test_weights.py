"""Weights outside the library: the artifact's weights file, its checks, and old artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tvmflow
from tvmflow import weights
from tvmflow.compile import Artifact
from tvmflow.errors import TvmflowError
from tvmflow.inputs import random_inputs
from tvmflow.manifest import sha256_file

ARRAYS: list[np.ndarray] = [
    np.arange(3, dtype=np.float32),
    np.random.default_rng(0).standard_normal((7, 5, 3)).astype(np.float32),
    np.array(2.5, dtype=np.float64),  # rank 0
    np.arange(-8, 8, dtype=np.int8).reshape(4, 4),
    np.array([True, False, True]),
    np.ones((0, 4), np.float16),  # empty
    np.arange(33, dtype=np.int64),
]


def test_weights_file_is_an_npz_with_aligned_arrays(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    weights.save(path, ARRAYS)
    with np.load(path, allow_pickle=False) as plain:  # any numpy reads it
        assert plain.files == [weights.member_name(i) for i in range(len(ARRAYS))]
        for i, array in enumerate(ARRAYS):
            np.testing.assert_array_equal(plain[weights.member_name(i)], array)
    mapped = weights.load(path, len(ARRAYS))
    for array, view in zip(ARRAYS, mapped, strict=True):
        assert view.dtype == array.dtype and view.shape == array.shape
        np.testing.assert_array_equal(view, array)
        assert view.ctypes.data % weights.ALIGNMENT == 0  # TVM takes it without a copy
        assert not view.flags.owndata  # a view of the mapping, not a copy


def test_dtypes_npy_cannot_name_are_stored_raw_and_reported(tmp_path: Path) -> None:
    """bfloat16 / float8 weights (ml_dtypes) would read back as void: stored as same-width
    unsigned ints, named in the returned map (the manifest's `raw_dtypes`); the runtime views
    them as TVM tensors of that dtype without a copy (tests/test_schedule_cpu_bf16.py runs a
    bf16 artifact end to end)."""
    import ml_dtypes

    values = np.linspace(-2, 2, 12, dtype=np.float32)
    arrays = [values, values.astype(ml_dtypes.bfloat16), values.astype(ml_dtypes.float8_e4m3fn)]
    path = tmp_path / "w.npz"
    raw = weights.save(path, arrays)
    assert raw == {"w1": "bfloat16", "w2": "float8_e4m3fn"}
    for array, view in zip(arrays, weights.load(path, len(arrays)), strict=True):
        assert view.tobytes() == array.tobytes()


def test_npz_written_by_numpy_still_loads(tmp_path: Path) -> None:
    """Alignment is what makes the views zero-copy, not what makes the file readable."""
    path = tmp_path / "w.npz"
    np.savez(path, **{weights.member_name(i): a for i, a in enumerate(ARRAYS)})  # type: ignore[arg-type]
    for array, view in zip(ARRAYS, weights.load(path, len(ARRAYS)), strict=True):
        np.testing.assert_array_equal(view, array)


def test_weights_file_with_other_members_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    weights.save(path, ARRAYS[:2])
    with pytest.raises(TvmflowError, match="the manifest expects 3 weights"):
        weights.load(path, 3)
    np.savez_compressed(path, w0=ARRAYS[0])
    with pytest.raises(TvmflowError, match="is compressed"):
        weights.load(path, 1)


def test_artifact_keeps_weights_out_of_the_library(artifacts: dict[str, Artifact]) -> None:
    art = artifacts["mlp"]
    info = art.manifest.weights
    assert info is not None and info.file == weights.WEIGHTS_NAME
    path = art.directory / info.file
    assert info.sha256 == sha256_file(path)
    values = weights.load(path, info.count)
    assert info.count == len(values) >= 2 and info.bytes == sum(v.nbytes for v in values)
    library = (art.directory / "model.so").read_bytes()
    biggest = max(values, key=lambda v: v.nbytes)
    assert biggest.nbytes >= 4096 and biggest.tobytes() not in library


def test_weights_are_stored_as_the_kernels_read_them(artifacts: dict[str, Artifact]) -> None:
    """Lifted after scheduling: conv weights are in the rules' prepacked layout (HWIO repacked
    as [O/nr, H, W, I, nr], rank 5), so no repacking runs at load or at run time."""
    art = artifacts["conv_net"]
    assert art.manifest.weights is not None
    values = weights.load(art.directory / art.manifest.weights.file, art.manifest.weights.count)
    assert any(v.ndim == 5 for v in values)


def test_tampered_weights_are_refused(artifacts: dict[str, Artifact], tmp_path: Path) -> None:
    directory = tmp_path / "a"
    shutil.copytree(artifacts["mlp"].directory, directory)
    data = bytearray((directory / weights.WEIGHTS_NAME).read_bytes())
    data[-100] ^= 1  # one bit of some weight's value
    (directory / weights.WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(TvmflowError, match=r"weights\.npz does not match the sha256") as info:
        tvmflow.load(directory)
    assert "\n" not in str(info.value)


def test_format_1_artifact_with_embedded_weights_still_runs(
    artifacts: dict[str, Artifact], zoo_dir: Path, tmp_path: Path
) -> None:
    """An artifact written before the weights file existed: constants inside model.so."""
    import tvm
    from tvm import relax

    from tvmflow.export import export_library
    from tvmflow.frontend import load_onnx
    from tvmflow.lowering import LoweringOptions, build, lower
    from tvmflow.targets import resolve_preset

    art = artifacts["conv_net"]
    preset = resolve_preset(art.manifest.preset)
    model = load_onnx(zoo_dir / "conv_net.onnx", {s.name: s.shape for s in art.manifest.inputs})
    lowered = lower(model, preset, LoweringOptions())
    params = {f"weight{i}": tvm.runtime.tensor(w) for i, w in enumerate(lowered.weights)}
    embedded = relax.transform.BindParams("main", params)(lowered.mod)
    target = tvm.target.Target(preset.target)
    directory = tmp_path / "v1"
    directory.mkdir()
    export_library(build(embedded, target), preset, target, directory / "model.so")
    data = json.loads((art.directory / "manifest.json").read_text())
    del data["weights"]
    data |= {"format_version": 1, "library_sha256": sha256_file(directory / "model.so")}
    (directory / "manifest.json").write_text(json.dumps(data))

    feeds = random_inputs(art.manifest.inputs, seed=7)
    old = tvmflow.load(directory).run(feeds)
    new = tvmflow.load(art.directory).run(feeds)
    for name, value in new.items():
        np.testing.assert_array_equal(old[name], value)
