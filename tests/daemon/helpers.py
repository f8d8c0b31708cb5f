"""Helpers for the daemon tests (loaded by conftest.py as the module ``daemon_helpers``).

A ``Probe`` is an independent MQTT v5 client (aiomqtt, like any back-end would use) that
records everything under ``treadctl/#`` and lets a test wait for a message matching a
predicate, within a deadline (``within_s``; a failure names what was awaited).
``running_daemon`` runs a :class:`Daemon` in the test's loop; ``virtual_daemon`` and
``frozen`` do the same on jumping virtual time. ``TcpSim`` serves a simulated treadmill on
TCP from the test's process (ground truth while the daemon is another process);
``TcpCable`` is a cable between them that a test can pull.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from treadctl.daemon import mqtt
from treadctl.daemon.config import DaemonConfig, parse_config
from treadctl.daemon.service import Daemon

T = TypeVar("T")

WALK = {
    "name": "test-walk",
    "segments": [{"duration_s": 120, "speed_kmh": 3.0, "direction": "forward"}],
}


def make_config(broker: Any, data_dir: Path, ids: list[str] | None = None, *,
                devices: dict[str, str] | None = None, daemon: dict[str, Any] | None = None,
                mqtt: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
                ) -> DaemonConfig:
    ids = ids or ["lane-1"]
    devices = devices or {}
    doc: dict[str, Any] = {
        "mqtt": {"host": "127.0.0.1", "port": broker.port,
                 "client_id": f"t-{uuid.uuid4().hex[:6]}", "keepalive_s": 5, **(mqtt or {})},
        "daemon": {"data_dir": str(data_dir), **(daemon or {})},
        "treadmill": [
            {"id": tid, "device": devices.get(tid, f"sim://?seed={i}"),
             "profile": "treadctl-reference"}
            for i, tid in enumerate(ids)
        ],
        **(extra or {}),
    }
    return parse_config(doc, "test.toml")


@dataclass
class Msg:
    topic: str
    payload: bytes
    retain: bool
    properties: Any

    @property
    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode()


class Probe:
    """Records every message on ``filters``; waits for the ones a test cares about."""

    def __init__(self, port: int, filters: tuple[str, ...] = ("treadctl/#",), **kw: Any) -> None:
        self.port = port
        self.filters = filters
        self.kw = kw
        self.messages: list[Msg] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.client: aiomqtt.Client | None = None

    async def __aenter__(self) -> Probe:
        # Nagle off, as docs/daemon.md advises back-ends: otherwise every reply waits ~40 ms
        # for a delayed ACK.
        self.client = aiomqtt.Client("127.0.0.1", self.port, protocol=aiomqtt.ProtocolVersion.V5,
                                     socket_options=mqtt.NODELAY,
                                     identifier=f"probe-{uuid.uuid4().hex[:6]}", **self.kw)
        # One probe may carry the commands of many lanes at once (tests/daemon/
        # test_user_actions.py): that many QoS 1 publishes in flight are expected.
        self.client.pending_calls_threshold = 1000
        await self.client.__aenter__()
        for f in self.filters:
            await self.client.subscribe(f, qos=1)
        self._task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.__aexit__(None, None, None)

    async def _pump(self) -> None:
        assert self.client is not None
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            msg = Msg(m.topic.value, payload, m.retain, m.properties)
            async with self._changed:
                self.messages.append(msg)
                self._changed.notify_all()

    async def wait_for(self, pred: Callable[[Msg], bool], within_s: float = 10.0,
                       since: int = 0, what: str = "") -> Msg:
        async def scan() -> Msg:
            seen = since
            async with self._changed:
                while True:
                    for m in self.messages[seen:]:
                        if pred(m):
                            return m
                    seen = len(self.messages)
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), within_s)
        except TimeoutError:
            tail = [f"{m.topic} {m.payload[:200]!r}" for m in self.messages[-15:]]
            raise AssertionError(f"no message {what} within {within_s} s; last: {tail}") from None

    def mark(self) -> int:
        return len(self.messages)

    async def event(self, tid: str, type_: str, request_id: Any = None, since: int = 0,
                    within_s: float = 10.0) -> dict[str, Any]:
        def pred(m: Msg) -> bool:
            if m.topic != f"treadctl/{tid}/event":
                return False
            d = m.json
            return bool(d.get("type") == type_ and
                        (request_id is None or d.get("request_id") == request_id))

        msg = await self.wait_for(pred, within_s, since, f"{tid} event {type_} {request_id}")
        return dict(msg.json)

    async def reply(self, tid: str, request_id: Any, since: int = 0,
                    within_s: float = 10.0) -> dict[str, Any]:
        """The ack or error event of the command with ``request_id``."""
        def pred(m: Msg) -> bool:
            return (m.topic == f"treadctl/{tid}/event" and m.json.get("request_id") == request_id
                    and m.json.get("type") in ("ack", "error"))

        msg = await self.wait_for(pred, within_s, since, f"{tid} reply to {request_id}")
        return dict(msg.json)

    async def state(self, tid: str, pred: Callable[[dict[str, Any]], bool], since: int = 0,
                    within_s: float = 10.0) -> dict[str, Any]:
        msg = await self.wait_for(
            lambda m: m.topic == f"treadctl/{tid}/state" and pred(m.json), within_s, since,
            f"{tid} state matching")
        return dict(msg.json)

    async def send(self, topic: str, payload: Any = b"", qos: int = 1,
                   properties: Properties | None = None, retain: bool = False) -> None:
        assert self.client is not None
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        await self.client.publish(topic, payload, qos=qos, properties=properties, retain=retain)

    async def command(self, tid: str, cmd: str, body: dict[str, Any] | None = None,
                      rid: str | None = None, within_s: float = 10.0) -> dict[str, Any]:
        """Send ``cmd`` with a fresh request id and return its ack/error event."""
        rid = rid or f"{cmd}-{uuid.uuid4().hex[:8]}"
        mark = self.mark()
        await self.send(f"treadctl/{tid}/cmd/{cmd}", {**(body or {}), "request_id": rid})
        return await self.reply(tid, rid, since=mark, within_s=within_s)


def openssl(*args: str, cwd: Path) -> None:
    """Run the openssl CLI (certificates for the TLS tests)."""
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def mosquitto_passwd(path: Path, users: dict[str, str]) -> None:
    """A mosquitto password file with ``users`` (name -> password)."""
    for i, (user, password) in enumerate(users.items()):
        flags = ["-b", "-c"] if i == 0 else ["-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(path), user, password], check=True,
                       capture_output=True, timeout=60)


def response_properties(topic: str, correlation: bytes) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = topic
    props.CorrelationData = correlation
    return props


@contextlib.asynccontextmanager
async def running_daemon(config: DaemonConfig, **kw: Any) -> AsyncIterator[Daemon]:
    daemon = Daemon(config, **kw)
    task = asyncio.create_task(daemon.run())
    try:
        ready = asyncio.create_task(daemon.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=20,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert ready in done, "daemon not ready"
        await asyncio.wait_for(
            asyncio.gather(daemon.estop_link.up.wait(),
                           *(lane.broker_up.wait() for lane in daemon.lanes.values())), 20)
        yield daemon
    finally:
        daemon.request_stop()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            if not task.done():
                task.cancel()


async def until(pred: Callable[[], bool], within_s: float = 10.0, what: str = "") -> None:
    """Wait for a condition on in-process state (belt truth), checking every 20 ms."""
    async def poll() -> None:
        # Simulator truth and controller fields have no event to await: poll them.
        while not pred():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), within_s)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


# --------------------------------------------------------------------------- TCP treadmills


class TcpSim:
    """A simulated treadmill served on TCP by *this* process (the daemon under test may be
    another process): ``url`` goes into the daemon's config, ``sim`` is the ground truth
    (the belt's physics and the firmware's wire log) once the daemon has connected."""

    def __init__(self, profile: str = "treadctl-reference", faults: str | None = None,
                 seed: int = 0) -> None:
        self.profile = profile
        self.faults = faults
        self.seed = seed
        self.url = ""
        self._sim: Any = None
        self._task: asyncio.Task[None] | None = None

    def _make(self) -> Any:
        from treadctl.profiles import load_profile
        from treadctl.simulator import SimTreadmill

        self._sim = SimTreadmill(load_profile(self.profile), faults=self.faults, seed=self.seed)
        return self._sim

    @property
    def sim(self) -> Any:
        assert self._sim is not None, f"nobody connected to {self.url} yet"
        return self._sim

    @property
    def connected(self) -> bool:
        return self._sim is not None

    async def start(self) -> TcpSim:
        from treadctl.simulator.link import serve_tcp

        ready: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(serve_tcp(self._make, "127.0.0.1", 0, ready=ready))
        host, port = await asyncio.wait_for(ready, 10)
        self.url = f"tcp://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


class TcpCable:
    """A TCP cable between the daemon and a treadmill that a test can pull: ``cut()`` drops
    every connection and refuses new ones, while the treadmill itself keeps running (its
    firmware watchdog stops the belt, as on real hardware)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: list[asyncio.Task[None]] = []

    async def start(self) -> TcpCable:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        self.url = f"tcp://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        self._pumps += [asyncio.create_task(self._pump(reader, up_writer)),
                        asyncio.create_task(self._pump(up_reader, writer))]

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
        with contextlib.suppress(Exception):
            writer.close()

    def cut(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for pump in self._pumps:
            pump.cancel()

    async def close(self) -> None:
        self.cut()
        for pump in self._pumps:
            with contextlib.suppress(BaseException):
                await pump


# --------------------------------------------------------------------------- virtual time

#: Threads that hold virtual time still while a test waits on the broker (see ``frozen``).
_FREEZERS = concurrent.futures.ThreadPoolExecutor(max_workers=64,
                                                  thread_name_prefix="freeze-virtual-time")


async def frozen(aw: Awaitable[T], cap_s: float = 30.0) -> T:
    """Await ``aw`` with the virtual clock standing still (:class:`treadctl.clock.
    WarpEventLoop`, jumping mode: time stands still while an executor job runs).

    On jumping virtual time the broker is outside the clock: a command's round trip through
    mosquitto would let the in-process treadmills run on for an unknown number of virtual
    seconds. Frozen, a command sent at virtual time t is carried out by the daemon at t, so
    a test can act in an exact phase of the session. Only for waits that need no timer of
    the loop (broker round trips, acks); ``cap_s`` (real seconds) bounds a mistake."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    job = loop.run_in_executor(_FREEZERS, release.wait, cap_s)
    try:
        return await aw
    finally:
        release.set()
        await job


@contextlib.asynccontextmanager
async def virtual_daemon(config: DaemonConfig, **kw: Any) -> AsyncIterator[Daemon]:
    """``running_daemon`` for a test on jumping virtual time (``treadctl.clock.run(...,
    speedup=None)``): the broker connections come up with time frozen, so no MQTT timeout
    (virtual seconds) expires while mosquitto answers in real time."""
    daemon = Daemon(config, **kw)
    task = asyncio.create_task(daemon.run())
    try:
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert ready.done(), "daemon not ready"
        await frozen(asyncio.wait_for(asyncio.gather(
            daemon.estop_link.up.wait(),
            *(lane.broker_up.wait() for lane in daemon.lanes.values())), 20))
        yield daemon
    finally:
        daemon.request_stop()
        try:
            await asyncio.wait_for(task, 120)
        finally:
            if not task.done():
                task.cancel()
