"""scripts/corpus: its table, its summary and the thread count it builds for (no compile here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "corpus.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corpus_script", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _row(name: str, command: str, **ratios: float) -> dict[str, Any]:
    return {
        "name": name,
        "family": "f",
        "source": "s",
        "status": "ok",
        "command": command,
        "threads": 1,
        **{f"ratio_{k}": v for k, v in ratios.items()},
    }


def test_summary_takes_the_faster_peer_per_row_and_table_marks_old_builds() -> None:
    corpus = _script()
    one = "tvmflow compile m.onnx --target x86 -o a --threads 1"
    rows = {
        "a": _row("a", one, onnxruntime=2.0, openvino=0.5),
        "b": _row("b", one, onnxruntime=2.0)
        | {
            "openvino_error": "OpenVINO cannot read b.onnx: conversion failed for If-13; "
            "compare without it: --compare onnxruntime"
        },
        "c": _row("c", "tvmflow compile m.onnx --target x86 -o a", onnxruntime=1.0, openvino=1.0),
    }
    results = {"models": rows}
    summary = corpus.summary(results)
    # against the faster peer, tvmflow's ratio is the larger one: 2.0, 2.0, 1.0 -> 1.59
    assert "against the best peer (the faster of the two per row) **1.59×** over 3" in summary
    assert "tvmflow/onnxruntime **1.59×**" in summary
    assert "tvmflow/OpenVINO **0.71×** over the 2 OpenVINO runs" in summary
    table = {ln.split(" | ")[0].strip("| "): ln for ln in corpus.to_markdown(results).splitlines()}
    assert "built for the host's cores" in table["c"]
    assert "built for the host's cores" not in table["a"]
    assert (
        "OpenVINO cannot run it: OpenVINO cannot read b.onnx: conversion failed for If-13)"
        in (table["b"])
    )


def test_an_artifact_says_the_thread_count_it_was_built_for(tmp_path: Path) -> None:
    corpus = _script()
    (tmp_path / "manifest.json").write_text(json.dumps({"target": {"num-cores": 1}}))
    assert corpus.built_threads(tmp_path) == 1
    (tmp_path / "manifest.json").write_text(json.dumps({"target": {"kind": "cuda"}}))
    assert corpus.built_threads(tmp_path) is None


@pytest.mark.parametrize("argv", [[], ["--threads", "2"]])
def test_compile_and_bench_get_the_same_thread_count(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The artifact is built for the threads it is benchmarked at (1 unless told)."""
    corpus = _script()
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
        calls.append(cmd)
        return 1, "tvmflow: error: stop here", 0.0

    monkeypatch.setattr(corpus, "_run", fake_run)
    monkeypatch.setattr(corpus, "CORPUS", tmp_path)
    (entry,) = [e for e in corpus.load_list()[0] if e.name == "oww-alexa"]
    monkeypatch.setattr(type(entry), "path", property(lambda self: tmp_path / "m.onnx"))
    (tmp_path / "m.onnx").write_bytes(b"")
    monkeypatch.setattr(sys, "argv", ["corpus", *argv])
    args = corpus.parse_args()
    row = corpus.run_model(entry, args)
    threads = argv[1] if argv else "1"
    assert f"--threads {threads}" in row["command"]
    corpus.bench_model(entry, tmp_path, args)
    assert calls[-1][calls[-1].index("--threads") + 1] == threads
