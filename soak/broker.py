"""The soak's REAL-TIME phase: the real daemon, sim treadmills, a real mosquitto that dies.

The daemon's MQTT side (paho's socket, the broker's keepalives) cannot run on virtual time,
so this phase runs on the wall clock for ``minutes`` (default 3). It starts mosquitto on a
free port (like tests/conftest.py), runs :class:`treadctl.daemon.service.Daemon` with a few
in-process simulated treadmills (one simulator per lane that outlives its links, as a real
treadmill does when the cable is pulled), starts programs over MQTT, and at random times:

* kills the broker (SIGKILL) for 2-8 s and restarts it; with ``broker_grace_s`` = 3 s a
  running session must be e-stopped (``broker-lost``) when the outage outlasts the grace;
* unplugs a lane's link; the daemon must rebuild it, the firmware watchdog stops the belt.

A monitor polls every lane every 20 ms and checks, against the simulators' ground truth,
the same invariants as the virtual phase: after every latch the belt reaches 0 within the
bound, no motion command reaches the firmware while latched, and nothing moves after a
reset until the next start. Resets and starts go over MQTT like a gym back-end's would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak.mosquitto import MOSQUITTO, Mosquitto
from soak.virtual import PROFILES, is_motion_write, stop_bound_s
from treadctl.control.controller import Controller, State
from treadctl.control.safety import SafetyConfig
from treadctl.profiles import FirmwareProfile
from treadctl.transport.sim import SimTransport
from treadctl.transport.stream import ByteStream, memory_pipe

log = logging.getLogger(__name__)

PROGRAMS = ("reverse-walk-intro", "forward-warmup-cooldown", "reverse-intervals")
BROKER_GRACE_S = 3.0
POLL_S = 0.02


class _Treadmill:
    """One simulated treadmill that outlives its links (pulling the cable does not reboot it)."""

    def __init__(self, profile: FirmwareProfile, seed: int) -> None:
        from treadctl.simulator import SimTreadmill

        self.profile = profile
        self.sim = SimTreadmill(profile, seed=seed)
        self.run_task = asyncio.get_running_loop().create_task(self.sim.run())
        self.transports: list[_LaneTransport] = []


class _LaneTransport(SimTransport):
    """``sim://`` to a lane's long-lived simulator: a new pipe per connect, same firmware."""

    def __init__(self, treadmill: _Treadmill) -> None:
        super().__init__(treadmill.profile)
        self.treadmill = treadmill

    async def _open(self) -> ByteStream:
        from treadctl.simulator import serve_stream

        sim = self.treadmill.sim
        self._sim = sim
        host, device = memory_pipe()
        self._device = device
        self._tasks = [asyncio.get_running_loop().create_task(serve_stream(sim, device))]
        return host


@dataclass
class _Watch:
    """What the monitor knows about one lane's current latch."""

    ctrl: Controller | None = None
    trip_key: tuple[int, str] | None = None
    t_trip: float = 0.0
    bound_s: float = 0.0
    stopped: bool = True
    t_unlatched: float | None = None


@dataclass
class BrokerStats:
    actions: Counter[str] = field(default_factory=Counter)
    interlocks: Counter[str] = field(default_factory=Counter)
    stops_checked: int = 0
    stops_within: int = 0
    worst_stop_s: float = 0.0
    worst_bound_s: float = 0.0
    starts: int = 0
    resets: int = 0
    violations: list[str] = field(default_factory=list)

    def violation(self, text: str) -> None:
        log.error("VIOLATION %s", text)
        self.violations.append(text)


class _Monitor:
    def __init__(self, daemon: Any, treadmills: dict[str, _Treadmill], stats: BrokerStats):
        self.daemon = daemon
        self.treadmills = treadmills
        self.stats = stats
        self.watch: dict[str, _Watch] = {tid: _Watch() for tid in treadmills}
        self.cfg: SafetyConfig = daemon.config.safety or SafetyConfig()
        self.start_sent: dict[str, float] = {}
        #: Link flaps being judged: (lane, sim t of the unplug, bound). The daemon swaps the
        #: controller at once, so the LINK_LOST latch is judged from here, not from the latch.
        self.flaps: list[tuple[str, float, float]] = []

    def flap(self, tid: str) -> None:
        tm = self.treadmills[tid]
        speed = abs(tm.sim.truth().speed_kmh)
        bound = stop_bound_s(tm.profile, self.cfg, speed) + POLL_S * 2
        self.stats.interlocks["link-lost (flap)"] += 1
        self.flaps.append((tid, tm.sim.now_s(), bound))

    async def run(self) -> None:
        while True:
            for tid, tm in self.treadmills.items():
                self.check(tid, tm)
            self.check_flaps()
            await asyncio.sleep(POLL_S)

    def check_flaps(self) -> None:
        still: list[tuple[str, float, float]] = []
        for tid, t0, bound in self.flaps:
            sim = self.treadmills[tid].sim
            now = sim.now_s()
            if sim.truth().speed_kmh == 0.0:
                self._stopped(tid, now - t0, bound)
                # Until the back-end starts again nothing may move (new link: Stop first).
                if self.start_sent.get(tid, -1.0) < t0:
                    self._no_motion(tid, self.treadmills[tid], t0, now, "after a link flap")
            elif now - t0 > bound:
                self.stats.violation(
                    f"{tid}: belt at {sim.truth().speed_kmh:.2f} km/h "
                    f"{now - t0:.2f} s after the link was cut"
                )
            else:
                still.append((tid, t0, bound))
        self.flaps = still

    def check(self, tid: str, tm: _Treadmill) -> None:
        lane = self.daemon.lanes.get(tid)
        ctrl: Controller | None = lane.controller if lane is not None else None
        w = self.watch[tid]
        sim = tm.sim
        trip = ctrl.latch.trip if ctrl is not None else None
        now = sim.now_s()
        if trip is not None and ctrl is not None:
            key = (id(ctrl), trip.reason)
            if key != w.trip_key:
                if w.trip_key is not None and not w.stopped:
                    pass  # the same latch re-applied on a new link: keep judging the first
                else:
                    speed = abs(sim.truth().speed_kmh)
                    w.t_trip = now
                    w.bound_s = stop_bound_s(tm.profile, self.cfg, speed) + POLL_S * 2
                    w.stopped = speed == 0.0
                    self.stats.interlocks[trip.interlock.value] += 1
                    if w.stopped:
                        self._stopped(tid, 0.0, w.bound_s)
                w.trip_key = key
                w.t_unlatched = None
        elif w.trip_key is not None:
            # Latch gone (reset, or a LINK_LOST latch replaced by a fresh controller): nothing
            # that moves may have reached the firmware in the meantime.
            self._no_motion(tid, tm, w.t_trip, now, "while latched")
            w.trip_key = None
            w.t_unlatched = now
        if w.trip_key is not None and not w.stopped:
            if sim.truth().speed_kmh == 0.0:
                w.stopped = True
                self._stopped(tid, now - w.t_trip, w.bound_s)
            elif now - w.t_trip > w.bound_s:
                w.stopped = True
                self.stats.violation(
                    f"{tid}: belt at {sim.truth().speed_kmh:.2f} km/h {now - w.t_trip:.2f} s "
                    f"after the trip (bound {w.bound_s:.2f} s)"
                )
        if (
            w.t_unlatched is not None
            and ctrl is not None
            and ctrl.snapshot.state in (State.STARTING, State.RUNNING)
        ):
            sent = self.start_sent.get(tid, -1.0)
            if sent < w.t_unlatched:
                self.stats.violation(f"{tid}: belt started after a reset without a start")
            self._no_motion(tid, tm, w.t_unlatched, sent, "between reset and start")
            w.t_unlatched = None

    def _stopped(self, tid: str, stop_s: float, bound_s: float) -> None:
        self.stats.stops_checked += 1
        if stop_s <= bound_s:
            self.stats.stops_within += 1
        else:
            self.stats.violation(f"{tid}: stop took {stop_s:.2f} s > bound {bound_s:.2f} s")
        if stop_s / bound_s > self.stats.worst_stop_s / max(self.stats.worst_bound_s, 1e-9):
            self.stats.worst_stop_s, self.stats.worst_bound_s = stop_s, bound_s

    def _no_motion(self, tid: str, tm: _Treadmill, t0: float, t1: float, what: str) -> None:
        moved = [
            (round(t, 3), u, v.hex())
            for (t, u, v) in tm.sim.wire_log
            if t0 < t < t1 and is_motion_write(tm.profile, u, v)
        ]
        if moved:
            self.stats.violation(f"{tid}: motion writes {what}: {moved[:3]}")


async def _publish(port: int, topic: str, payload: dict[str, Any]) -> bool:
    import aiomqtt

    try:
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=f"soak-{os.getpid()}", timeout=2
        ) as client:
            await client.publish(topic, json.dumps(payload), qos=1)
        return True
    except Exception:
        return False  # broker down: the back-end retries later


async def _phase(minutes: float, seed: int, workdir: Path, treadmills: int) -> dict[str, Any]:
    from treadctl.daemon.config import parse_config
    from treadctl.daemon.service import Daemon
    from treadctl.profiles import load_profile

    rng = random.Random(seed)
    stats = BrokerStats()
    broker = Mosquitto(workdir)
    broker.start()
    ids = [f"lane-{i + 1}" for i in range(treadmills)]
    tms: dict[str, _Treadmill] = {
        tid: _Treadmill(load_profile(PROFILES[i % len(PROFILES)]), seed + i)
        for i, tid in enumerate(ids)
    }
    config = parse_config(
        {
            "mqtt": {
                "host": "127.0.0.1",
                "port": broker.port,
                "client_id": f"soak-{seed}",
                "keepalive_s": 5,
            },
            "daemon": {"data_dir": str(workdir / "data"), "broker_grace_s": BROKER_GRACE_S},
            "treadmill": [
                {"id": tid, "device": "sim://", "profile": tms[tid].profile.name} for tid in ids
            ],
        },
        "soak.toml",
    )

    def factory(tm_cfg: Any, profile: FirmwareProfile) -> _LaneTransport:
        transport = _LaneTransport(tms[tm_cfg.id])
        tms[tm_cfg.id].transports.append(transport)
        return transport

    daemon = Daemon(config, transport_factory=factory, notify=lambda _s: False)
    task = asyncio.create_task(daemon.run())
    monitor = _Monitor(daemon, tms, stats)
    t_start = time.monotonic()
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        mon = asyncio.create_task(monitor.run())
        deadline = t_start + minutes * 60
        next_action = time.monotonic() + rng.uniform(10, 20)
        while time.monotonic() < deadline:
            for tid in ids:
                await _drive(tid, daemon, monitor, tms[tid], broker.port, rng, stats)
            if time.monotonic() >= next_action:
                await _act(rng, broker, daemon, tms, stats, monitor)
                next_action = time.monotonic() + rng.uniform(12, 25)
            await asyncio.sleep(0.5)
        mon.cancel()
        with contextlib.suppress(BaseException):
            await mon
    finally:
        daemon.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 40)
        if not task.done():
            task.cancel()
        for tm in tms.values():
            tm.run_task.cancel()
        broker.stop()
    sessions, samples = await asyncio.to_thread(_count_store, workdir / "data")
    wall = time.monotonic() - t_start
    return {
        "wall_s": round(wall, 1),
        "treadmills": treadmills,
        "actions": dict(stats.actions),
        "trips_per_interlock": dict(stats.interlocks),
        "starts": stats.starts,
        "resets": stats.resets,
        "stops_checked": stats.stops_checked,
        "stops_within_bound": stats.stops_within,
        "worst_stop_s": round(stats.worst_stop_s, 3),
        "worst_stop_bound_s": round(stats.worst_bound_s, 3),
        "sessions_recorded": sessions,
        "samples_recorded": samples,
        "violations": stats.violations,
    }


async def _drive(
    tid: str,
    daemon: Any,
    monitor: _Monitor,
    tm: _Treadmill,
    port: int,
    rng: random.Random,
    stats: BrokerStats,
) -> None:
    """The gym back-end: start idle lanes, reset latched ones once their belt stands."""
    lane = daemon.lanes.get(tid)
    ctrl = lane.controller if lane is not None else None
    if ctrl is None or not lane.broker_up.is_set():
        return
    w = monitor.watch[tid]
    if ctrl.latch.latched:
        ready = w.stopped and w.trip_key is not None and tm.sim.truth().speed_kmh == 0.0
        if ready and await _publish(port, f"treadctl/{tid}/cmd/reset", {"reason": "soak: ok"}):
            stats.resets += 1
        return
    if ctrl.snapshot.state is State.IDLE and abs(tm.sim.truth().speed_kmh) == 0.0:
        monitor.start_sent[tid] = tm.sim.now_s()
        if await _publish(port, f"treadctl/{tid}/cmd/start", {"program": rng.choice(PROGRAMS)}):
            stats.starts += 1


async def _act(
    rng: random.Random,
    broker: Mosquitto,
    daemon: Any,
    tms: dict[str, _Treadmill],
    stats: BrokerStats,
    monitor: _Monitor,
) -> None:
    if rng.random() < 0.5:
        outage = rng.uniform(2.0, 8.0)
        stats.actions["broker-kill"] += 1
        log.info("killing the broker for %.1f s", outage)
        broker.stop()
        await asyncio.sleep(outage)
        await asyncio.to_thread(broker.start)
        return
    tid = rng.choice(list(tms))
    lane = daemon.lanes.get(tid)
    ctrl = lane.controller if lane is not None else None
    if ctrl is not None:
        stats.actions["link-flap"] += 1
        log.info("unplugging %s", tid)
        transport = ctrl.transport
        if isinstance(transport, SimTransport):
            monitor.flap(tid)
            transport.unplug()


def _count_store(data_dir: Path) -> tuple[int, int]:
    from treadctl.store.db import SessionStore, default_db_path

    with SessionStore(default_db_path(data_dir)) as store, store.connection() as conn:
        sessions = int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
        samples = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    return sessions, samples


def format_broker_table(result: dict[str, Any]) -> str:
    lines = [
        f"broker phase (REAL time): {result['wall_s']:.0f} s wall, "
        f"{result['treadmills']} treadmills, real daemon + mosquitto",
        "",
        f"{'action':<18} {'count':>6}",
    ]
    lines += [f"{k:<18} {v:>6}" for k, v in sorted(result["actions"].items())]
    lines += ["", f"{'interlock':<20} {'trips':>6}"]
    lines += [f"{k:<20} {v:>6}" for k, v in sorted(result["trips_per_interlock"].items())]
    lines += [
        "",
        f"starts / resets over MQTT {result['starts']} / {result['resets']}",
        f"stops within bound        {result['stops_within_bound']}/{result['stops_checked']}",
        f"worst stop vs bound       {result['worst_stop_s']:.2f} s / "
        f"{result['worst_stop_bound_s']:.2f} s",
        f"sessions recorded         {result['sessions_recorded']}",
        f"samples recorded          {result['samples_recorded']}",
        f"violations                {len(result['violations'])}",
    ]
    lines += [f"  - {v}" for v in result["violations"][:20]]
    return "\n".join(lines)


def run_broker_phase(minutes: float = 3.0, seed: int = 1, treadmills: int = 3) -> dict[str, Any]:
    """Run the real-time phase; returns its result dict (``table`` holds the printout)."""
    if not (Path(MOSQUITTO).exists() or shutil.which("mosquitto")):
        raise SystemExit(f"--broker-phase needs mosquitto ({MOSQUITTO} not found)")
    with tempfile.TemporaryDirectory(prefix="soak-broker-") as tmp:
        result = asyncio.run(_phase(minutes, seed, Path(tmp), treadmills))
    result["table"] = format_broker_table(result)
    return result
