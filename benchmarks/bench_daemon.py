"""Gym daemon: e-stop latency, gym-wide fan-out, memory, start-up time and CPU.

All against a real mosquitto started here on a free port (skipped when not installed).

* ``daemon.estop_latency``: MQTT publish of ``cmd/estop`` -> the Stop frame on the wire,
  with the publisher (this process), the daemon (``treadctl daemon``) and the simulator
  (``tcp://``) in three processes, as on a Pi. "On the wire" is stamped inside the daemon
  process by a benchmark-only tap (``_TAPPED_DAEMON``) when the framed transport's
  ``write_nowait`` has returned, which has handed the frame to the TCP socket in that
  call. ``estop_at_firmware`` stamps the same Stop where the simulated firmware receives
  it, in its own process: that adds the TCP hop and the wake-up of a third process. All
  stamps are ``time.perf_counter`` (CLOCK_MONOTONIC, one clock for every process on Linux).
  Baseline in the same run (``mqtt_baseline``): mosquitto's own publish -> receive round
  trip to a plain subscriber in its own process (``_SUBSCRIBER``: aiomqtt, stamped in
  paho's on_message, before any queue), i.e. the daemon's topology without the daemon.
  ``added`` is ours minus that baseline, percentile by percentile; its note also gives it
  against a subscriber in the publisher's own process (no third process to wake, so a
  smaller baseline). Every MQTT client here has Nagle off (``tcp_nodelay``), as the
  daemon's own connections do. With two CPUs or more every daemon process (and the
  baseline's subscriber) has one CPU to itself, the rest of the benchmark the others
  (``_cpus_apart``): the simulated firmware must not preempt the daemon that writes to it.
  Trials go back to back (each e-stop right after the previous one's reset was acked), so
  some land while the daemon still publishes that reset's ``command`` event and state.
* ``daemon.gym_estop_fanout``: ``treadctl/all/cmd/estop`` to a daemon process with 50
  ``tcp://`` treadmills (``generic-ftms``, 4 Hz telemetry; 50 stamping simulators in one
  other process) -> the last of the 50 Stop frames written to its link (the target), and
  received by its simulated firmware (``..._at_firmware``: adds 50 simulators taking turns
  in one process). Between trials every lane is reset over MQTT and the daemon settles
  (``FANOUT_SETTLE_S``): we measure an e-stop hitting a daemon in steady state, not one
  queued behind the aftermath (50 resets, acks, state messages) of the previous trial.
* ``daemon.estop_under_flood``: ``daemon.estop_latency`` (publish -> Stop on the wire, daemon
  in its own process) while ``mosquitto_pub -l``, another process, floods the same
  treadmill with 10,000 ``cmd/set`` messages at QoS 1; the daemon's per-treadmill rate
  limit is the default (20/s), so most of the flood is answered ``rate-limited``.
* ``daemon.rss`` / ``daemon.start_to_ready``: ``treadctl daemon`` as a process with one
  ``sim://`` treadmill; READY=1 arrives on a NOTIFY_SOCKET we bind (as systemd would).
* ``daemon.cpu_50``: the daemon process with 50 treadmills (``tcp://`` simulators in a
  separate process, so their CPU is not counted), each in a session and publishing
  telemetry at 4 Hz; process CPU over a fixed real-time window.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt

from soak.mosquitto import MOSQUITTO, Mosquitto
from treadctl.daemon import mqtt

ROOT = Path(__file__).resolve().parents[1]
CONTROL_POINT = 0x2AD9
WALK = {"name": "bench-walk",
        "segments": [{"duration_s": 600, "speed_kmh": 3.0, "direction": "forward"}]}


MISSES = {"estop": 0, "fanout": 0, "flood": 0}
FANOUT_SETTLE_S = 0.3
#: The CPUs of every daemon process here (and of the baseline's subscriber, which stands in
#: for it); this process, mosquitto and the simulators run on the others (``_cpus_apart``).
DAEMON_CPUS: set[int] = set()


@contextlib.contextmanager
def _cpus_apart() -> Iterator[str]:
    """With two CPUs or more, the daemon gets one to itself. On a Pi the treadmill is not a
    process: here a simulator woken by the daemon's own Stop write preempted the daemon
    inside that write (150-230 us, in 25-50 % of the trials on two shared CPUs), and the
    e-stop p50 jumped between two modes from run to run. Yields a note for the results."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield "one CPU: daemon, broker and simulators share it"
        return
    before = set(cpus)
    DAEMON_CPUS.clear()
    DAEMON_CPUS.add(cpus[0])
    os.sched_setaffinity(0, set(cpus[1:]))
    try:
        yield f"daemon on CPU {cpus[0]}; broker, simulators and publisher on the other(s)"
    finally:
        os.sched_setaffinity(0, before)
        DAEMON_CPUS.clear()


def _on_daemon_cpus() -> None:
    """``preexec_fn`` of a daemon process (see ``_cpus_apart``)."""
    if DAEMON_CPUS:
        os.sched_setaffinity(0, DAEMON_CPUS)
FLOOD_MESSAGES = 10_000


@contextlib.contextmanager
def _mosquitto(workdir: Path) -> Iterator[int]:
    # set_tcp_nodelay: without it the broker holds small packets (Nagle) behind delayed
    # ACKs of earlier ones; documented as a deployment setting in docs/daemon.md.
    broker = Mosquitto(workdir, ["set_tcp_nodelay true"]).start()
    try:
        yield broker.port
    finally:
        broker.stop()


def _client(*args: Any, **kwargs: Any) -> aiomqtt.Client:
    """The benchmark's own clients with Nagle off, as a gym back-end should run them (see
    docs/daemon.md): with it on, a publish can wait ~40 ms for a delayed ACK."""
    kwargs.setdefault("socket_options", mqtt.NODELAY)
    return aiomqtt.Client(*args, **kwargs)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


class _Stamp(asyncio.Queue[aiomqtt.Message]):
    """Receive-side timestamp at the same point the daemon intercepts e-stops."""

    stamps: asyncio.Queue[float]

    def put_nowait(self, item: aiomqtt.Message) -> None:
        _Stamp.stamps.put_nowait(time.perf_counter())


async def _baseline(port: int, trials: int) -> list[float]:
    _Stamp.stamps = asyncio.Queue()
    out: list[float] = []
    async with _client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5,
                              queue_type=_Stamp) as sub, \
            _client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as pub:
        await sub.subscribe("bench/ping", qos=1)
        for _ in range(trials):
            t0 = time.perf_counter()
            await pub.publish("bench/ping", b"", qos=1)
            t1 = await asyncio.wait_for(_Stamp.stamps.get(), 5)
            out.append(t1 - t0)
    return out


#: A plain subscriber in its own process (the daemon's topology: publisher, broker and
#: subscriber are three processes), on the daemon's stack (aiomqtt, Nagle off), stamping
#: ``perf_counter`` in paho's callback as the daemon's e-stop handler would.
_SUBSCRIBER = """
import asyncio, sys, time
import aiomqtt
from treadctl.daemon import mqtt

async def main(port):
    client = mqtt.plain_client("127.0.0.1", port)
    mqtt.on_topic(client, "bench/ping",
                  lambda c, u, m: print(repr(time.perf_counter()), flush=True))
    async with client:
        await client.subscribe("bench/ping", qos=1)
        print("ready", flush=True)
        async for _ in client.messages:
            pass
asyncio.run(main(int(sys.argv[1])))
"""


async def _baseline_proc(port: int, trials: int) -> list[float]:
    sub = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SUBSCRIBER, str(port), env=_env(), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, preexec_fn=_on_daemon_cpus)
    out: list[float] = []
    try:
        assert sub.stdout is not None
        assert (await asyncio.wait_for(sub.stdout.readline(), 30)).strip() == b"ready"
        async with _client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as pub:
            for _ in range(trials):
                t0 = time.perf_counter()
                await pub.publish("bench/ping", b"", qos=1)
                line = await asyncio.wait_for(sub.stdout.readline(), 5)
                out.append(float(line) - t0)
    finally:
        sub.kill()
        await sub.wait()
    return out


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra or {})
    return env


def _write_toml(path: Path, port: int, data_dir: Path, devices: list[str], profile: str,
                rate_per_s: float | None = None) -> None:
    rate = "" if rate_per_s is None else f"command_rate_per_s = {rate_per_s}\n"
    lines = [f'[mqtt]\nport = {port}\nclient_id = "bench-proc"\n',
             f'[daemon]\ndata_dir = "{data_dir}"\n{rate}']
    for i, dev in enumerate(devices):
        lines.append(f'[[treadmill]]\nid = "t{i:02d}"\ndevice = "{dev}"\nprofile = "{profile}"\n')
    path.write_text("\n".join(lines))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_to_ready(port: int, workdir: Path) -> tuple[float, float]:
    sock_path = workdir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    cfg = workdir / "one.toml"
    _write_toml(cfg, port, workdir / "data1", ["sim://"], "treadctl-reference")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "treadctl.cli", "daemon", "--config", str(cfg),
                             "--log-level", "WARNING"], env=_env({"NOTIFY_SOCKET": str(sock_path)}),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_on_daemon_cpus)
    try:
        ready_s = math.nan
        while True:
            data = sock.recv(4096).decode()
            if "READY=1" in data:
                ready_s = time.perf_counter() - t0
                break
        time.sleep(2.0)  # let it settle into steady state (MQTT connected, telemetry)
        rss = _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        sock.close()
    return ready_s, rss


def _cpu_50(port: int, workdir: Path, n: int, window_s: float, profile: str) -> float:
    farm = subprocess.Popen([sys.executable, "-c", _STAMPING_SIMS, profile, str(n)], env=_env(),
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    proc: subprocess.Popen[bytes] | None = None
    try:
        assert farm.stdout is not None
        devices = [farm.stdout.readline().strip() for _ in range(n)]
        cfg = workdir / "fifty.toml"
        _write_toml(cfg, port, workdir / "data50", devices, profile)
        proc = subprocess.Popen([sys.executable, "-m", "treadctl.cli", "daemon", "--config",
                                 str(cfg), "--log-level", "WARNING"], env=_env(), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_on_daemon_cpus)
        asyncio.run(_start_sessions(port, n))
        c0, t0 = _cpu_s(proc.pid), time.monotonic()
        time.sleep(window_s)  # a fixed real-time window is the measurement itself
        c1, t1 = _cpu_s(proc.pid), time.monotonic()
        return 100.0 * (c1 - c0) / (t1 - t0)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        farm.kill()
        farm.wait()


async def _start_sessions(port: int, n: int) -> None:
    import json

    async with _client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe("treadctl/+/status", qos=1)
        await c.subscribe("treadctl/+/event", qos=1)
        online: set[str] = set()
        acked: set[str] = set()
        async with asyncio.timeout(60):
            async for m in c.messages:
                tid = m.topic.value.split("/")[1]
                if m.topic.value.endswith("/status") and m.payload == b"online":
                    if tid not in online:
                        online.add(tid)
                        await c.publish(f"treadctl/{tid}/cmd/start",
                                        json.dumps({"program": WALK, "request_id": "go"}), qos=1)
                elif m.topic.value.endswith("/event"):
                    ev = json.loads(bytes(m.payload))
                    if ev.get("request_id") == "go" and ev["type"] == "ack":
                        acked.add(tid)
                if len(acked) == n:
                    break
    await asyncio.sleep(3.0)  # belts ramp up to speed before the window starts


#: ``n`` simulators on TCP in one process (``argv``: profile, n); prints each one's URL,
#: then ``S <index> <perf_counter>`` whenever a Stop write reaches simulator ``index``.
_STAMPING_SIMS = """
import asyncio, sys, time
from treadctl.simulator.firmware import SimTreadmill
from treadctl.simulator.link import serve_tcp
from treadctl.profiles import load_profile

def stamping(prof, index):
    class Stamping(SimTreadmill):
        def handle_write(self, uuid, value):
            if uuid == 0x2AD9 and bytes(value[:1]) == b"\\x08":
                print(f"S {index} {time.perf_counter()!r}", flush=True)
            return super().handle_write(uuid, value)
    return lambda: Stamping(prof)

async def main(profile, n):
    prof = load_profile(profile)
    loop = asyncio.get_running_loop()
    readies = [loop.create_future() for _ in range(n)]
    tasks = [asyncio.ensure_future(serve_tcp(stamping(prof, i), "127.0.0.1", 0, ready=r))
             for i, r in enumerate(readies)]
    for r in readies:
        host, port = await r
        print(f"tcp://{host}:{port}", flush=True)
    await asyncio.gather(*tasks)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

#: ``treadctl daemon`` with two benchmark-only taps, written to ``argv[1]`` at exit:
#: ``<link> <t>`` when a Stop frame has been written to a link (``write_nowait`` returned:
#: the frame went to the socket in that call), and ``estop:<payload hex> <t>``: the time of
#: the first Stop written *during* a lane's e-stop handler for that message, which ties
#: each Stop to the message that caused it, whichever connection carried it first.
_TAPPED_DAEMON = """
import atexit, sys, time
from treadctl.daemon import service
from treadctl.transport import framed
stamps, wire = [], []
inner = framed.FramedTransport.write_nowait
def write_nowait(self, uuid, value, **kw):
    fut = inner(self, uuid, value, **kw)
    if uuid == 0x2AD9 and bytes(value[:1]) == b"\\x08":
        t = time.perf_counter()
        wire.append(t)
        stamps.append(f"{self.name} {t!r}")
    return fut
framed.FramedTransport.write_nowait = write_nowait
inner_estop = service.Lane.estop_now
def estop_now(self, payload=b"", *args, **kw):
    k = len(wire)
    inner_estop(self, payload, *args, **kw)
    if len(wire) > k:
        stamps.append(f"estop:{bytes(payload).hex()} {wire[k]!r}")
service.Lane.estop_now = estop_now
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write("\\n".join(stamps)))
from treadctl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _first_after(stamps: list[float], t0: float) -> float:
    i = bisect.bisect_right(stamps, t0)
    return stamps[i] if i < len(stamps) else math.inf


class _ProcGym:
    """A gym as on a Pi: ``n`` stamping simulators on TCP in one process, ``treadctl
    daemon`` (tapped) in another, and this process as the back-end (one MQTT client)."""

    def __init__(self, port: int, workdir: Path, n: int, profile: str,
                 rate_per_s: float | None = 1000) -> None:
        self.port, self.workdir, self.n, self.profile = port, workdir, n, profile
        self.rate_per_s = rate_per_s  # the daemon's command rate limit; None: its default
        self.ids = [f"t{i:02d}" for i in range(n)]
        self.tap = workdir / f"wire-stamps-{n}.txt"
        self.stamps: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.idle: set[str] = set()
        self._idle_changed = asyncio.Event()
        self.urls: list[str] = []
        self.client: aiomqtt.Client | None = None
        self.set_replies = 0

    async def __aenter__(self) -> _ProcGym:
        self._stack = contextlib.AsyncExitStack()
        await self._stack.__aenter__()
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()  # no process left behind when start-up fails
            raise
        return self

    async def _start(self) -> None:
        sims = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _STAMPING_SIMS, self.profile, str(self.n), env=_env(),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        self._stack.push_async_callback(_terminate, sims)
        assert sims.stdout is not None
        for _ in range(self.n):
            line = await asyncio.wait_for(sims.stdout.readline(), 30)
            self.urls.append(line.decode().strip())
        self._spawn(self._read_stamps(sims.stdout))
        # Subscribed before the daemon starts: its live messages are the ones without the
        # retain flag (retained ones may be left over from an earlier daemon).
        self.client = await self._stack.enter_async_context(
            _client("127.0.0.1", self.port, protocol=aiomqtt.ProtocolVersion.V5))
        await self.client.subscribe("treadctl/+/event", qos=1)
        await self.client.subscribe("treadctl/+/state", qos=1)
        self._spawn(self._listen(self.client))
        cfg = self.workdir / f"gym-{self.n}.toml"
        _write_toml(cfg, self.port, self.workdir / f"data-{self.n}", self.urls, self.profile,
                    rate_per_s=self.rate_per_s)
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _TAPPED_DAEMON, str(self.tap), "daemon", "--config",
            str(cfg), "--log-level", "WARNING", env=_env(), cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_on_daemon_cpus)
        # Terminated before the client goes (the stack unwinds in reverse).
        self._stack.push_async_callback(_terminate, daemon)
        await asyncio.wait_for(self.all_idle(), 60)

    async def __aexit__(self, *exc: Any) -> None:
        await self._stack.__aexit__(*exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

        self._stack.push_async_callback(cancel)

    async def _read_stamps(self, stdout: asyncio.StreamReader) -> None:
        async for line in stdout:
            _, index, t = line.split()
            self.stamps.put_nowait((int(index), float(t)))

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            if m.retain:
                continue
            tid = m.topic.value.split("/")[1]
            body = json.loads(bytes(m.payload))  # type: ignore[arg-type]
            if m.topic.value.endswith("/event"):
                if body.get("command") == "set":
                    self.set_replies += 1  # the flood's (acks and rate-limit errors)
                else:
                    self.events.put_nowait(body)
            elif body.get("state") == "idle":
                self.idle.add(tid)
                self._idle_changed.set()
            else:
                self.idle.discard(tid)

    async def all_idle(self) -> None:
        while len(self.idle) < self.n:
            self._idle_changed.clear()
            await self._idle_changed.wait()

    async def estop(self, topic: str, payload: bytes = b"") -> float | None:
        """Publish an e-stop; the time until every simulator received a Stop after it."""
        assert self.client is not None
        t0 = time.perf_counter()
        await self.client.publish(topic, payload, qos=1)
        waiting = set(range(1 if topic != "treadctl/all/cmd/estop" else self.n))
        last = t0
        try:
            async with asyncio.timeout(10):
                while waiting:
                    index, t = await self.stamps.get()
                    if t > t0 and index in waiting:  # not a stale one of an earlier trial
                        waiting.discard(index)
                        last = max(last, t)
        except TimeoutError:
            return None
        return last - t0

    async def reset(self, ids: list[str], tag: str) -> None:
        """``cmd/reset`` to each lane until acked (the latch may not be set yet)."""
        assert self.client is not None
        pending = {tid: 0 for tid in ids}
        for tid in ids:
            await self._send_reset(tid, tag, 0)
        async with asyncio.timeout(30):
            while pending:
                ev = await self.events.get()
                tid = str(ev.get("request_id", "")).partition(f".{tag}.")[0]
                if tid not in pending or ev.get("command") != "reset":
                    continue
                if ev["type"] == "ack":
                    del pending[tid]
                elif "state" in str(ev.get("error")) and pending[tid] < 200:
                    pending[tid] += 1
                    await self._send_reset(tid, tag, pending[tid])
                else:
                    raise RuntimeError(f"reset of {tid} refused: {ev}")

    async def _send_reset(self, tid: str, tag: str, attempt: int) -> None:
        assert self.client is not None
        body = {"reason": "bench", "request_id": f"{tid}.{tag}.{attempt}"}
        await self.client.publish(f"treadctl/{tid}/cmd/reset", json.dumps(body), qos=1)

    def _tap(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for line in self.tap.read_text().splitlines():
            key, t = line.rsplit(" ", 1)
            out.setdefault(key, []).append(float(t))
        for v in out.values():
            v.sort()
        return out

    def on_wire(self, sent: list[float]) -> list[float]:
        """For each gym-wide e-stop sent at ``t0``: until the last link got its first Stop
        after it (the daemon settles between trials, so no Stop of an earlier one is late)."""
        links = {k: v for k, v in self._tap().items() if not k.startswith("estop:")}
        return [max(_first_after(v, t0) for v in links.values()) - t0 for t0 in sent]

    def on_wire_by_payload(self, sent: list[tuple[bytes, float]]) -> list[float]:
        """For each e-stop (unique payload, sent at ``t0``): until the first handler of that
        message had written its Stop; missing ones are left out (counted by the caller)."""
        tap = self._tap()
        return [tap[f"estop:{payload.hex()}"][0] - t0 for payload, t0 in sent
                if f"estop:{payload.hex()}" in tap]


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _estop_latency_proc(port: int, workdir: Path, n: int, trials: int,
                              settle_s: float = 0.0) -> tuple[list[float], list[float]]:
    """E-stops at a daemon in its own process (``n`` = 1: ``t00/cmd/estop``; more: the
    gym-wide ``all/cmd/estop``), each followed by a reset of every lane.

    Returns (publish -> the last lane's Stop written to its link by the daemon, publish ->
    the last lane's Stop received by its simulated firmware), one entry per trial."""
    topic = "treadctl/t00/cmd/estop" if n == 1 else "treadctl/all/cmd/estop"
    at_firmware: list[float] = []
    sent: list[tuple[bytes, float]] = []
    gym = _ProcGym(port, workdir, n, "treadctl-reference" if n == 1 else "generic-ftms")
    async with gym:
        for i in range(trials):
            payload = json.dumps({"reason": f"bench {i}"}).encode()
            t0 = time.perf_counter()
            took = await gym.estop(topic, payload)
            if took is None:
                MISSES["estop" if n == 1 else "fanout"] += 1
            else:
                sent.append((payload, t0))
                at_firmware.append(took)
            await gym.reset(gym.ids, f"r{i}")
            if settle_s:
                await asyncio.sleep(settle_s)
    # The tap file is written when the daemon exits (the stack above terminated it).
    if n == 1:
        return gym.on_wire_by_payload(sent), at_firmware
    return gym.on_wire([t0 for _, t0 in sent]), at_firmware


async def _flood_proc(port: int, workdir: Path, trials: int) -> tuple[list[float], int]:
    """E-stops (as in ``_estop_latency_proc``) while ``mosquitto_pub``, its own process,
    floods the same treadmill with ``FLOOD_MESSAGES`` x ``cmd/set`` at QoS 1; the daemon's
    per-treadmill rate limit is the default. E-stops go on until ``trials`` or until the
    flood is over (sent, and no reply to it for 0.2 s). Returns (publish -> Stop written to
    the link, per e-stop; replies to the flood seen)."""
    body = "\n".join(json.dumps({"speed_kmh": 3.0, "request_id": i})
                     for i in range(FLOOD_MESSAGES)) + "\n"
    sent: list[tuple[bytes, float]] = []
    gym = _ProcGym(port, workdir / "flood", 1, "treadctl-reference", rate_per_s=None)
    (workdir / "flood").mkdir(exist_ok=True)
    async with gym:
        flood = await asyncio.create_subprocess_exec(
            shutil.which("mosquitto_pub") or "mosquitto_pub", "-h", "127.0.0.1", "-p",
            str(port), "-t", "treadctl/t00/cmd/set", "-q", "1", "-l",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        try:
            assert flood.stdin is not None
            flood.stdin.write(body.encode())
            await flood.stdin.drain()
            flood.stdin.close()
            last, quiet_since = gym.set_replies, time.perf_counter()
            for i in range(trials):
                if gym.set_replies != last:
                    last, quiet_since = gym.set_replies, time.perf_counter()
                elif flood.returncode is not None and time.perf_counter() - quiet_since > 0.2:
                    break
                # No reset in between (it would be rate limited by the flood, as it should):
                # a latched treadmill still puts a Stop on the wire for every e-stop.
                reason = f"flood {i}"
                payload = json.dumps({"reason": reason}).encode()
                assert gym.client is not None
                t0 = time.perf_counter()
                await gym.client.publish("treadctl/t00/cmd/estop", payload, qos=1)
                sent.append((payload, t0))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        while (await gym.events.get()).get("reason") != reason:
                            pass  # until this e-stop's ack
        finally:
            await _terminate(flood)
    wire = gym.on_wire_by_payload(sent)
    MISSES["flood"] += len(sent) - len(wire)
    return wire, gym.set_replies


def run(quick: bool) -> list[dict[str, Any]]:
    if not Path(MOSQUITTO).exists() and shutil.which("mosquitto") is None:
        return [{"name": "daemon", "value": None, "unit": "", "note": "mosquitto not installed"}]
    trials = 200 if quick else 1000
    fan_trials = 20 if quick else 100
    results: list[dict[str, Any]] = []
    with _cpus_apart() as cpus, tempfile.TemporaryDirectory() as tmp, \
            _mosquitto(Path(tmp)) as port:
        work = Path(tmp)

        async def measure() -> dict[str, Any]:
            return {
                "base": await _baseline(port, trials),
                "base_proc": await _baseline_proc(port, trials),
                "one": await _estop_latency_proc(port, work, 1, trials),
                "fan": await _estop_latency_proc(port, work, 50, fan_trials, FANOUT_SETTLE_S),
                "flood": await _flood_proc(port, work, trials),
            }

        m = asyncio.run(measure())
        base, base_proc = m["base"], m["base_proc"]
        (ours, at_fw), (fan_wire, fan_fw), (flood, flood_replies) = m["one"], m["fan"], m["flood"]
        ms = 1000.0
        for q in (50, 99):
            b, bi, o = _pct(base_proc, q) * ms, _pct(base, q) * ms, _pct(ours, q) * ms
            results.append({"name": f"daemon.mqtt_baseline_p{q}", "value": round(b, 3),
                            "unit": "ms",
                            "note": "mosquitto pub -> sub, subscriber in its own process; with "
                                    f"the subscriber in the publisher's process: {bi:.3f} ms"})
            results.append({"name": f"daemon.estop_latency_p{q}", "value": round(o, 3),
                            "unit": "ms", "baseline": round(b, 3),
                            "ratio": round(o / b, 2) if b else None,
                            "note": f"{len(ours)} trials ({MISSES['estop']} missed); publish -> "
                                    "Stop frame written to the TCP link; publisher, daemon, "
                                    f"sim in 3 processes; {cpus}"})
            entry: dict[str, Any] = {"name": f"daemon.estop_added_p{q}",
                                     "value": round(o - b, 3), "unit": "ms",
                                     "note": "latency - baseline; against the in-process "
                                             f"subscriber: {o - bi:.3f} ms"}
            if q == 99:
                entry.update(target=1.0, met=o - b <= 1.0)
            results.append(entry)
        results.append({"name": "daemon.estop_latency_mean", "value":
                        round(statistics.fmean(ours) * ms, 3), "unit": "ms",
                        "baseline": round(statistics.fmean(base_proc) * ms, 3)})
        fw99 = _pct(at_fw, 99) * ms
        results.append({"name": "daemon.estop_at_firmware_p99", "value": round(fw99, 3),
                        "unit": "ms", "baseline": round(_pct(base_proc, 99) * ms, 3),
                        "note": f"p50 {_pct(at_fw, 50) * ms:.2f} ms; same trials, Stop received "
                                "by the simulated firmware in its own process (adds the TCP "
                                "hop and that process's wake-up)"})
        fp99 = _pct(fan_wire, 99) * ms
        results.append({"name": "daemon.gym_estop_fanout_50_p99", "value": round(fp99, 2),
                        "unit": "ms", "target": 20.0, "met": fp99 <= 20.0,
                        "note": f"p50 {_pct(fan_wire, 50) * ms:.2f} ms over {len(fan_wire)} "
                                f"trials ({MISSES['fanout']} missed); publish -> the last of 50 "
                                "Stop frames written to its TCP link"})
        results.append({"name": "daemon.gym_estop_fanout_50_at_firmware_p99",
                        "value": round(_pct(fan_fw, 99) * ms, 2), "unit": "ms",
                        "note": f"p50 {_pct(fan_fw, 50) * ms:.2f} ms; the last of the 50 "
                                "simulated firmwares (all in one other process) received it"})
        if flood:
            fl99 = _pct(flood, 99) * ms
            results.append({"name": "daemon.estop_under_flood_p99", "value": round(fl99, 3),
                            "unit": "ms", "baseline": round(_pct(ours, 99) * ms, 3),
                            "note": f"p50 {_pct(flood, 50) * ms:.2f} ms, max "
                                    f"{max(flood) * ms:.2f} ms; {len(flood)} e-stops during a "
                                    f"{FLOOD_MESSAGES} x cmd/set flood ({flood_replies} replies "
                                    f"to it seen, {MISSES['flood']} e-stops missed); baseline = "
                                    "estop_latency_p99 (no flood)"})
        else:
            results.append({"name": "daemon.estop_under_flood_p99", "value": None, "unit": "ms",
                            "note": "no e-stop completed during the flood"})
        ready_s, rss = _start_to_ready(port, work)
        results.append({"name": "daemon.start_to_ready", "value": round(ready_s, 3), "unit": "s",
                        "target": 1.0, "met": ready_s <= 1.0,
                        "note": "process spawn (interpreter + imports) to READY=1"})
        results.append({"name": "daemon.rss_1_treadmill", "value": round(rss, 1), "unit": "MB",
                        "target": 60.0, "met": rss <= 60.0})
        cpu = _cpu_50(port, work, 50, 5.0 if quick else 20.0, "generic-ftms")
        results.append({"name": "daemon.cpu_50_treadmills", "value": round(cpu, 1),
                        "unit": "% of one core", "target": 25.0, "met": cpu <= 25.0,
                        "note": "50 sessions, firmware telemetry 4 Hz, MQTT telemetry 4 Hz; "
                                "sims in another process"})
    return results
