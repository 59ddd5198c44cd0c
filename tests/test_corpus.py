"""The real-model corpus (scripts/corpus.toml): each model compiles for x86 and matches onnxruntime.

The `quick` models (package-shipped, fetched by scripts/fetch-models) run in the default suite;
the rest — the larger package models and the torch exports `scripts/corpus` makes — under `slow`.
`scripts/corpus` runs the same models through the CLI and benchmarks them (benchmarks/corpus.md).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MODELS_DIR, ROOT
from tvmflow.compile import compile_model
from tvmflow.frontend import load_onnx
from tvmflow.targets import resolve_preset

ENTRIES: list[dict[str, Any]] = tomllib.loads((ROOT / "scripts" / "corpus.toml").read_text())[
    "model"
]
EXPORTED_DIR = ROOT / ".cache" / "corpus" / "models"


def _path(entry: dict[str, Any]) -> Path:
    return (MODELS_DIR if "package" in entry else EXPORTED_DIR) / f"{entry['name']}.onnx"


def _params(quick: bool) -> list[Any]:
    """A model with a `known_failure` is a strict xfail: the day it passes, the list says so."""
    return [
        pytest.param(
            e,
            id=e["name"],
            marks=[pytest.mark.xfail(reason=e["known_failure"], strict=True)]
            if "known_failure" in e
            else [],
        )
        for e in ENTRIES
        if bool(e.get("quick", False)) == quick
    ]


def _compile_and_verify(entry: dict[str, Any], tmp_path: Path) -> None:
    path = _path(entry)
    if not path.is_file():
        hint = "scripts/fetch-models" if entry.get("quick") else "scripts/corpus --fetch-only"
        if entry.get("quick") and os.environ.get("TVMFLOW_REQUIRE_MODELS") == "1":
            pytest.fail(f"{path} is missing: run {hint}")
        pytest.skip(f"{path} is missing: run {hint}")
    freeze = entry.get("freeze", {})
    shapes = {n: tuple(d) for n, d in entry.get("shapes", {}).items() if d and n not in freeze}
    imported = load_onnx(path, shapes, freeze)
    artifact = compile_model(imported, resolve_preset("x86"), tmp_path / "art")
    # compile verified the artifact against onnxruntime (it raises AccuracyError otherwise)
    assert artifact.manifest.accuracy, "compile did not verify the artifact"


@pytest.mark.parametrize("entry", _params(quick=True))
def test_quick_corpus_model_compiles_and_matches(entry: dict[str, Any], tmp_path: Path) -> None:
    _compile_and_verify(entry, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("entry", _params(quick=False))
def test_corpus_model_compiles_and_matches(entry: dict[str, Any], tmp_path: Path) -> None:
    _compile_and_verify(entry, tmp_path)
