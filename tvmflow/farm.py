"""Device farms: TVM's RPC tracker and servers measure tuning candidates on target devices.

The tracker (`python -m tvm.exec.rpc_tracker`) queues servers by key; each server
(`python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`) runs on one device. TVM's own
clients retry an unreachable tracker for a minute and wait for a free server forever; tvmflow
talks to the tracker with bounded timeouts so a dead tracker or an empty farm is a clear error
in seconds, and a server that dies mid-job costs only the candidates it was measuring.
"""

from __future__ import annotations

import functools
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tvmflow.errors import TvmflowError

if TYPE_CHECKING:
    from tvm import rpc
    from tvm.s_tir import meta_schedule as ms


@dataclass(frozen=True)
class Tracker:
    """Where the RPC tracker listens."""

    host: str
    port: int
    connect_timeout_s: float = 5.0

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class KeyStatus:
    """Servers the tracker knows for one device key."""

    key: str
    servers: int
    free: int
    pending_requests: int

    @property
    def busy(self) -> int:
        return max(0, self.servers - self.free)


@dataclass(frozen=True)
class Farm:
    """A tracker and the key of the devices to measure on."""

    tracker: Tracker
    key: str
    session_timeout_s: float = 60.0  # one candidate's upload + measurement on a device
    queue_timeout_s: float = 600.0  # waiting for a free server of the key


def _connect(tracker: Tracker, timeout: float) -> socket.socket:
    """A socket that has done the tracker handshake, or a one-line TvmflowError."""
    from tvm.rpc import base

    hint = (
        f"start one with `python -m tvm.exec.rpc_tracker --host {tracker.host} --port "
        f"{tracker.port}` or fix --rpc-tracker"
    )
    try:
        sock = socket.create_connection((tracker.host, tracker.port), timeout=timeout)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        message = f"cannot reach the RPC tracker at {tracker} ({reason}); {hint}"
        raise TvmflowError(message) from None
    try:
        sock.settimeout(timeout)
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", base.recvall(sock, 4))[0]
    except (OSError, RuntimeError) as exc:
        sock.close()
        raise TvmflowError(
            f"the RPC tracker at {tracker} did not answer within {timeout:g}s ({exc}); {hint}"
        ) from None
    if magic != base.RPC_TRACKER_MAGIC:
        sock.close()
        raise TvmflowError(f"{tracker} is not a TVM RPC tracker; {hint}")
    return sock


def _ask(sock: socket.socket, message: list[Any]) -> Any:
    from tvm.rpc import base

    base.sendjson(sock, message)
    value = base.recvjson(sock)
    if not isinstance(value, list) or value[0] != base.TrackerCode.SUCCESS:
        raise RuntimeError(f"the RPC tracker answered {value!r}")
    return value[1]


def farm_status(tracker: Tracker) -> tuple[KeyStatus, ...]:
    """Keys the tracker knows, with their free and busy servers."""
    from tvm.rpc import base

    sock = _connect(tracker, tracker.connect_timeout_s)
    try:
        summary = _ask(sock, [base.TrackerCode.SUMMARY])
    except (OSError, RuntimeError) as exc:
        raise TvmflowError(f"the RPC tracker at {tracker} failed to report ({exc})") from None
    finally:
        sock.close()
    servers: dict[str, int] = {}
    for info in summary.get("server_info", []):
        key = str(info.get("key", "")).partition(":")[2]
        servers[key] = servers.get(key, 0) + 1
    queues = summary.get("queue_info", {})
    keys = sorted(set(servers) | set(queues))
    return tuple(
        KeyStatus(
            key,
            servers.get(key, 0),
            int(queues.get(key, {}).get("free", 0)),
            int(queues.get(key, {}).get("pending", 0)),
        )
        for key in keys
    )


def check_farm(farm: Farm) -> KeyStatus:
    """Fail fast, naming the fix, unless the tracker answers and has servers for the key."""
    status = {s.key: s for s in farm_status(farm.tracker)}
    found = status.get(farm.key)
    if found is None or found.servers == 0:
        known = ", ".join(k for k, s in status.items() if s.servers) or "none"
        raise TvmflowError(
            f"the RPC tracker at {farm.tracker} has no servers for key {farm.key!r} (keys with "
            f"servers: {known}); start one with `python -m tvm.exec.rpc_server --tracker "
            f"{farm.tracker} --key {farm.key}` or fix --rpc-key"
        )
    return found


def request_session(farm: Farm) -> rpc.RPCSession:
    """A session on a free server of the farm's key, waiting at most `queue_timeout_s`.

    Runs in MetaSchedule's runner worker processes. Raises (the candidate then counts as a
    failed measurement) when the key has no servers left or none frees up in time.
    """
    from tvm import rpc
    from tvm.rpc import base

    check_farm(farm)
    sock = _connect(farm.tracker, farm.tracker.connect_timeout_s)
    try:
        sock.settimeout(farm.queue_timeout_s)
        url, port, matchkey = _ask(sock, [base.TrackerCode.REQUEST, farm.key, "", 1])
    finally:
        sock.close()
    return rpc.connect(url, port, matchkey, farm.session_timeout_s)


def _create_session(farm: Farm, _config: Any) -> rpc.RPCSession:
    """MetaSchedule's f_create_session, bound to a farm with functools.partial."""
    return request_session(farm)


def make_runner(
    farm: Farm,
    evaluator: ms.runner.EvaluatorConfig,
    initializer: Callable[[], None] | None = None,
) -> ms.runner.Runner:
    """MetaSchedule's RPC runner on the farm: one measuring worker per server of the key
    (`initializer` runs in each worker process)."""
    from tvm.s_tir import meta_schedule as ms

    servers = check_farm(farm).servers
    config = ms.runner.RPCConfig(
        tracker_host=farm.tracker.host,
        tracker_port=farm.tracker.port,
        tracker_key=farm.key,
        session_timeout_sec=int(farm.session_timeout_s),
    )
    return ms.runner.RPCRunner(
        rpc_config=config,
        evaluator_config=evaluator,
        max_workers=servers,
        f_create_session=functools.partial(_create_session, farm),
        f_alloc_argument=_alloc_from_host,
        initializer=initializer,
    )


def _alloc_from_host(
    session: rpc.RPCSession, device: Any, args_info: Any, alloc_repeat: int
) -> list[Any]:
    """Candidate inputs filled here and copied to the device.

    MetaSchedule's default asks the device for `tvm.contrib.random.random_fill_for_measure`,
    which a runtime-only TVM (what a board or a production host runs) does not register.
    """
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    return alloc_argument_common(_fill_from_host, device, args_info, alloc_repeat)  # type: ignore[no-any-return]


def _fill_from_host(tensor: Any) -> None:
    from tvmflow.inputs import random_inputs
    from tvmflow.manifest import TensorSpec

    spec = TensorSpec("arg", tuple(int(d) for d in tensor.shape), str(tensor.dtype))
    tensor.copyfrom(random_inputs([spec])["arg"])
