"""Target presets: data files, host selection, TVM acceptance and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tvm

from tvmflow import targets
from tvmflow.cli import main
from tvmflow.errors import TvmflowError
from tvmflow.targets import builtin_presets, check_build_tools, resolve_preset

EXPECTED = {
    "x86", "x86-avx2", "x86-avx512", "arm-cortex-a72", "arm-neoverse-n1", "arm-neoverse-v1",
    "cuda-sm75", "cuda-sm80", "cuda-sm86", "cuda-sm89", "cuda-sm90",
}  # fmt: skip


def test_all_issue_presets_exist() -> None:
    assert set(builtin_presets()) >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED - {"x86"}))
def test_tvm_accepts_every_preset_target(name: str) -> None:
    preset = builtin_presets()[name]
    target = tvm.target.Target(preset.target)
    assert target.kind.name == preset.target["kind"]
    assert preset.description and preset.device in ("cpu", "cuda")
    if preset.device == "cuda":
        assert target.host is not None and "nvcc" in preset.needs
    if preset.arch == "aarch64":
        assert preset.cross_compiler == "aarch64-linux-gnu-gcc"


def test_x86_alias_picks_a_preset_this_host_runs() -> None:
    preset = resolve_preset("x86")
    assert preset.name in builtin_presets()["x86"].select_best_of
    assert preset.runs_on_host()
    assert preset.target["num-cores"] >= 1


def test_unknown_target_lists_valid_names() -> None:
    with pytest.raises(TvmflowError, match="unknown target 'x87'.*x86-avx2"):
        resolve_preset("x87")


def test_custom_toml_preset(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'description = "mine"\ndevice = "cpu"\narch = "x86_64"\ncpu_features = ["sse2"]\n'
        '[target]\nkind = "llvm"\nmtriple = "x86_64-linux-gnu"\nmcpu = "x86-64"\n'
    )
    preset = resolve_preset(str(path))
    assert preset.name == "mine" and preset.target["mcpu"] == "x86-64"


def test_custom_toml_without_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('description = "bad"\n[target]\nmcpu = "x86-64"\n')
    with pytest.raises(TvmflowError, match="needs a `kind`"):
        resolve_preset(str(path))


def test_custom_toml_with_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('descripton = "typo"\n[target]\nkind = "llvm"\n')
    with pytest.raises(TvmflowError, match="unknown keys \\['descripton'\\]"):
        resolve_preset(str(path))


def test_missing_cross_compiler_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targets, "find_tool", lambda name: None)
    with pytest.raises(TvmflowError, match="apt-get install gcc-aarch64-linux-gnu"):
        check_build_tools(resolve_preset("arm-neoverse-n1"))


def test_targets_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) >= EXPECTED
    assert rows["x86"]["selects"] in ("x86-avx512-vnni", "x86-avx512", "x86-avx2")
    assert rows["cuda-sm90"]["target"]["arch"] == "sm_90"


def test_targets_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "arm-neoverse-n1" in out and "runs here" in out


def test_cli_unknown_target_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["compile", str(tmp_path / "m.onnx"), "-t", "nope", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown target 'nope'; valid names:" in err and "Traceback" not in err
