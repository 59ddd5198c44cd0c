"""scripts/benchmark: model selection and the README table update (the run itself is the
bench library, tested in test_bench.py; the full reference run takes many minutes)."""

from __future__ import annotations

import importlib.util
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
    assert names == {"resnet18", "mobilenet_v2", "encoder", "minilm-int8", "ppocr-v4-det"}


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
