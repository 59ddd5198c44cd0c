"""Test helpers for aarch64 emulation: the sysroot, and an RPC tracker with an emulated server.

`arm_rpc_tracker` (a session fixture, registered in conftest.py) yields an `RpcTracker` on
loopback with one TVM RPC server running inside the emulated aarch64 environment, registered
under `RpcTracker.key`: what `tvmflow tune --rpc-tracker HOST:PORT --rpc-key KEY` needs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tvmflow.emulate import QEMU, emulator_python, sysroot
from tvmflow.targets import find_tool

ROOT = Path(__file__).resolve().parent.parent
ARM_PRESET = "arm-neoverse-n1"
CROSS_COMPILER = "aarch64-linux-gnu-gcc"


def _missing(reason: str) -> None:
    """Skip, or fail under scripts/test, which builds the sysroot before pytest runs."""
    if os.environ.get("TVMFLOW_REQUIRE_ARM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def require_cross_compiler() -> None:
    if find_tool(CROSS_COMPILER) is None:
        _missing(f"{CROSS_COMPILER} is missing: apt-get install gcc-aarch64-linux-gnu")


def require_emulation() -> None:
    """The cross compiler, qemu and the sysroot: everything an `arm` test needs."""
    require_cross_compiler()
    if find_tool(QEMU) is None:
        _missing(f"{QEMU} is missing: apt-get install qemu-user-static")
    if emulator_python() is None:
        _missing(f"no aarch64 sysroot at {sysroot()}: run scripts/arm-sysroot")


@dataclass(frozen=True)
class RpcTracker:
    """Where a tracker listens and the key its emulated aarch64 server registered under."""

    host: str
    port: int
    key: str


def free_servers(tracker: RpcTracker) -> int:
    """How many servers with the tracker's key are free now."""
    from tvm import rpc

    client = rpc.connect_tracker(tracker.host, tracker.port)
    try:
        queue = client.summary()["queue_info"]
    finally:
        client.close()
    return int(queue.get(tracker.key, {}).get("free", 0))


@contextmanager
def emulated_rpc_tracker(
    log: Path, key: str = "arm-emulated", timeout: float = 300.0
) -> Iterator[RpcTracker]:
    """A tracker on 127.0.0.1 and scripts/arm-rpc-server registered with it; both stopped after."""
    from tvm.rpc.tracker import Tracker

    tracker = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    info = RpcTracker("127.0.0.1", tracker.port, key)
    command = [str(ROOT / "scripts" / "arm-rpc-server"), "--tracker", f"127.0.0.1:{info.port}"]
    command += ["--key", key, "--port", "9300", "--port-end", "9400"]
    with open(log, "w") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while free_servers(info) < 1:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"emulated RPC server did not register: {log.read_text()}")
            time.sleep(1)
        yield info
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its emulated worker processes
            server.wait(timeout=30)
        except ProcessLookupError:  # it already ended (a failed start): nothing to stop
            server.wait()
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        tracker.terminate()


@pytest.fixture(scope="session")
def arm_rpc_tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpcTracker]:
    require_emulation()
    log = tmp_path_factory.mktemp("arm-rpc") / "server.log"
    with emulated_rpc_tracker(log) as tracker:
        yield tracker
