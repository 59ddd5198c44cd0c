"""scripts/onnx-conformance: ONNX's node tests through tvmflow (the CI subset; all under slow).

The subset spans the common op families, tvmflow's own converters and attribute-like inputs
the backend bakes; every case in it must pass through tvmflow. The full run (slow) must not
fall below the tvmflow total recorded in benchmarks/onnx-conformance.md.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "onnx_conformance.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("onnx_conformance", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def node_dir(script: ModuleType) -> Path:
    if not script.NODE_DIR.is_dir():
        message = f"{script.NODE_DIR} is missing: run scripts/fetch-models"
        if os.environ.get("TVMFLOW_REQUIRE_MODELS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return script.NODE_DIR


@pytest.fixture(autouse=True)
def build_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVMFLOW_BACKEND_CACHE", str(tmp_path_factory.getbasetemp() / "builds"))


def test_subset_passes_through_tvmflow(script: ModuleType, node_dir: Path) -> None:
    cases = [c for c in script.case_dirs(node_dir) if c.name in script.SUBSET]
    assert len(cases) == len(script.SUBSET)
    results = [script.run_case(case) for case in cases]
    failed = [f"{r.name}: {r.tvmflow.reason}" for r in results if r.tvmflow.status != "passed"]
    assert not failed, failed
    report = script.render(results, 1.0)
    assert f"| tvmflow | {len(cases)} | 0 | 0 |" in report


def test_internal_error_is_a_failure_not_a_skip(
    script: ModuleType, node_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tvmflow.backend import TvmflowBackend

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(TvmflowBackend, "prepare", crash)
    outcome = script.run_tvmflow(node_dir / "test_abs")
    assert (outcome.status, outcome.reason) == ("failed", "RuntimeError: boom")


def test_unsupported_operator_is_reported_as_unsupported(
    script: ModuleType, node_dir: Path
) -> None:
    # ImageDecoder: decoding files is no job for compiled tensor code (Det and Loop, the
    # earlier examples, have converters now)
    outcome = script.run_tvmflow(node_dir / "test_image_decoder_decode_png_rgb")
    assert outcome.status == "unsupported"
    assert outcome.reason.startswith("unsupported operators: ImageDecoder")


@pytest.mark.slow
def test_full_run_keeps_the_recorded_total(script: ModuleType, node_dir: Path) -> None:
    recorded = (ROOT / "benchmarks" / "onnx-conformance.md").read_text()
    match = re.search(r"^\| tvmflow \| (\d+) \|", recorded, re.M)
    assert match
    results = script.run_all(script.case_dirs(node_dir), jobs=2, timeout=180)
    passed = sum(r.tvmflow.status == "passed" for r in results)
    assert passed >= int(match.group(1))
