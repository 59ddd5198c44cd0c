"""Device farms: a real TVM RPC tracker and servers on 127.0.0.1, and cross-built candidates."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import ZOO_SHAPES
from tests.test_tune import FAST, RecordingSink
from tvmflow.cli import main
from tvmflow.errors import TvmflowError
from tvmflow.farm import Farm, Tracker, farm_status
from tvmflow.frontend import ImportedModel, load_onnx
from tvmflow.targets import resolve_preset
from tvmflow.tune import build_candidate, export_candidate, tune_model
from tvmflow.tunelog import open_database, read_summary

KEY = "tvmflow-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # killpg takes its session children too
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _wait_for(tracker: Tracker, servers: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = {k.key: k for k in farm_status(tracker)}.get(KEY)
            if (found.servers if found else 0) == servers:
                return
        except TvmflowError:
            pass
        assert time.monotonic() < deadline, f"farm did not reach {servers} server(s) in time"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def tracker() -> Iterator[Tracker]:
    port = _free_port()
    proc = _spawn("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                  "--port-end", str(port + 1), "--silent")  # fmt: skip
    try:
        yield Tracker("127.0.0.1", port)
    finally:
        _kill(proc)


@pytest.fixture
def start_server(tracker: Tracker) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts RPC servers for KEY on the tracker; all are killed after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        port = _free_port()
        proc = _spawn("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                      "--port-end", str(port + 1), "--tracker", str(tracker), "--key", KEY,
                      "--silent")  # fmt: skip
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            _kill(proc)


@pytest.fixture(scope="module")
def mlp(zoo_dir: Path) -> ImportedModel:
    return load_onnx(zoo_dir / "mlp.onnx", ZOO_SHAPES["mlp"])


def test_farm_status_lists_keys_with_free_and_busy_servers(
    tracker: Tracker, start_server, capsys
) -> None:
    start_server()
    start_server()
    _wait_for(tracker, 2)
    assert main(["farm", "status", "--rpc-tracker", str(tracker), "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[KEY]["servers"] == 2 and rows[KEY]["free"] == 2 and rows[KEY]["busy"] == 0
    assert main(["farm", "status", "--rpc-tracker", str(tracker)]) == 0
    assert KEY in capsys.readouterr().out


def test_tune_on_the_farm_survives_a_dead_server(
    tracker: Tracker, start_server, mlp: ImportedModel, tmp_path: Path
) -> None:
    servers = [start_server(), start_server()]
    _wait_for(tracker, 2)
    log = tmp_path / "log"

    def on_batch(progress) -> None:  # kill one server after the first batch, the other later
        if sink.batches and len(sink.batches) <= len(servers):
            _kill(servers[len(sink.batches) - 1])

    sink = RecordingSink(on_batch)
    farm = Farm(tracker, KEY, session_timeout_s=60.0)
    options = replace(FAST, trials=100, farm=farm)
    with pytest.raises(TvmflowError, match=f"no servers for key '{KEY}'.*saved in"):
        tune_model(mlp, resolve_preset("x86"), log, options, sink)
    # the job measured on after the first server died; it stopped only when the farm was empty
    assert len(sink.batches) >= 2
    assert sink.batches[1].new_trials > sink.batches[0].new_trials
    summary = read_summary(log)
    assert summary is not None
    assert summary["last_job"]["measured_on"] == str(tracker)
    assert summary["last_job"]["stopped"] == "device farm unavailable"
    assert summary["trials"] == len(open_database([log])) == sink.batches[-1].trials
    assert all(t["best_us"] is not None for t in summary["tasks"])  # measured on the devices


def test_unreachable_tracker_fails_fast(zoo_dir: Path, tmp_path: Path, capsys) -> None:
    port = _free_port()  # nothing listens there
    args = ["tune", str(zoo_dir / "mlp.onnx"), "-t", "x86", "--input-shape", "x=4,64"]
    start = time.monotonic()
    rc = main([*args, "--log", str(tmp_path / "l"), "--rpc-tracker", f"127.0.0.1:{port}",
               "--rpc-key", KEY])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - start < 10
    assert f"cannot reach the RPC tracker at 127.0.0.1:{port}" in err
    assert "python -m tvm.exec.rpc_tracker" in err and len(err.strip().splitlines()) == 1
    assert main(["farm", "status", "--rpc-tracker", f"127.0.0.1:{port}"]) == 2


def test_silent_tracker_times_out_instead_of_hanging(capsys) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        start = time.monotonic()
        rc = main(["farm", "status", "--rpc-tracker", f"127.0.0.1:{port}"])
        elapsed = time.monotonic() - start
    assert rc == 2 and elapsed < 15
    assert "did not answer within 5s" in capsys.readouterr().err


def test_key_without_servers_is_refused(
    tracker: Tracker, zoo_dir: Path, tmp_path: Path, capsys
) -> None:
    args = ["tune", str(zoo_dir / "mlp.onnx"), "-t", "x86", "--input-shape", "x=4,64"]
    rc = main([*args, "--log", str(tmp_path / "l"), "--rpc-tracker", str(tracker),
               "--rpc-key", "no-such-device"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "has no servers for key 'no-such-device'" in err and "--key no-such-device" in err


def test_a_target_that_does_not_run_here_needs_a_farm(
    zoo_dir: Path, tmp_path: Path, capsys
) -> None:
    args = ["tune", str(zoo_dir / "mlp.onnx"), "-t", "arm-cortex-a72", "--input-shape", "x=4,64"]
    rc = main([*args, "--log", str(tmp_path / "l")])
    err = capsys.readouterr().err
    assert rc == 2 and "--rpc-tracker" in err


def test_candidates_for_arm_are_cross_built(mlp: ImportedModel) -> None:
    """The builder exports with the preset's cross compiler: an aarch64 library an Arm RPC
    server can load without a compiler of its own."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from tvmflow.frontend import to_relax
    from tvmflow.lowering import fuse

    preset = resolve_preset("arm-cortex-a72")
    if preset.cross_compiler is None or not shutil.which(preset.cross_compiler):
        pytest.skip(f"{preset.cross_compiler} is not installed")
    target = tvm.target.Target(preset.target)
    task = ms.relax_integration.extract_tasks(fuse(to_relax(mlp), target), target)[0]
    builder = ms.builder.LocalBuilder(
        max_workers=1,
        f_build=build_candidate,
        f_export=functools.partial(export_candidate, preset),
    )
    (result,) = builder.build([ms.builder.BuilderInput(task.dispatched[0], target)])
    assert result.error_msg is None, result.error_msg
    header = Path(result.artifact_path).read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 0xB7  # aarch64
