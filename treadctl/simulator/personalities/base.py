"""What every native-protocol personality shares: one :class:`SimTreadmill` (its physics,
safety key and fault timeline), the machine's own watchdog, link faults, and the event
lines a test reads to judge from the physics.

The simulator's FTMS link watchdog is switched off (a personality's machine has the
watchdog its manual gives, or none); commands reach the firmware through its own
Control Point rules (``SimTreadmill._execute``), so ranges, standstill-only direction
changes and the safety key behave as on the FTMS side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import sys
from typing import Any

from treadctl.control.reverse import DirectionCommand, VendorCharacteristic
from treadctl.drivers.base import KMH_PER_MPH
from treadctl.ftms import (
    RequestControl,
    ResultCode,
    SetTargetInclination,
    SetTargetSpeed,
    StartOrResume,
    StopOrPause,
)
from treadctl.profiles import FirmwareProfile
from treadctl.simulator.faults import FaultPlan
from treadctl.simulator.firmware import BeltTruth, SimTreadmill
from treadctl.transport.stream import ByteStream

#: Environment variable: when "1", event lines (JSON) follow the address on stdout.
EVENTS_ENV = "TREADCTL_SIM_EVENTS"
#: The FTMS link watchdog of the underlying simulator, pushed out of reach (~11 days).
_NO_LINK_WATCHDOG_MS = 10**9


def firmware_profile(profile: FirmwareProfile) -> FirmwareProfile:
    """The profile the underlying FTMS firmware model runs: no FTMS link watchdog, and a
    direction command (Biodex 84h) modelled by the firmware's direction write at standstill
    (its ``vendor-characteristic`` rule; the FTMS side never sees it), at the wire's speed."""
    control = dataclasses.replace(profile.control, link_timeout_ms=_NO_LINK_WATCHDOG_MS)
    # The machine runs at what its wire says (e.g. 19 x 0.1 mph = 3.06 km/h), not at the
    # profile's km/h grid: the firmware model only keeps FTMS's 0.01 km/h resolution.
    speed = dataclasses.replace(profile.speed, increment_kmh=0.01)
    reverse = profile.reverse
    if reverse.method == DirectionCommand.name:  # the wire's own method, not the driver's
        reverse = dataclasses.replace(reverse, method=VendorCharacteristic.name)
    return dataclasses.replace(
        profile, control=control, reverse=reverse, speed=speed, protocol="ftms"
    )


class Personality:
    """One simulated machine speaking its maker's bytes on one host stream at a time."""

    protocol = ""

    def __init__(
        self,
        profile: FirmwareProfile,
        *,
        faults: FaultPlan | str | None = None,
        seed: int = 0,
        events: bool | None = None,
    ) -> None:
        self.profile = profile
        self.sim = SimTreadmill(firmware_profile(profile), faults=faults, seed=seed)
        self.sim.attach(lambda uuid, value: None)  # FTMS notifications go nowhere
        self.sim._execute(RequestControl(), [])
        self.stream: ByteStream | None = None
        self.watchdog_s = profile.wire.watchdog_ms / 1000
        self.watchdog_armed = False
        self.last_rx = self.sim.now_s()
        self._watchdog: asyncio.TimerHandle | None = None
        self._events = os.environ.get(EVENTS_ENV) == "1" if events is None else events
        self._seen_events = 0
        self._moving = False
        self._last_watchdog_t: float | None = None
        self.rx_log: list[tuple[float, bytes]] = []
        self.tx_log: list[tuple[float, bytes]] = []
        self._tick: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- link

    def attach(self, stream: ByteStream | None) -> None:
        self.stream = stream

    def send(self, data: bytes) -> None:
        stream = self.stream
        if stream is None or stream.closed or self.sim.fault_active("link-drop"):
            return
        if self.sim.fault_active("garbage") and self.sim.rng.random() < 0.3:
            data = bytes(self.sim.rng.randrange(256) for _ in range(3)) + data
        self.tx_log.append((self.sim.now_s(), data))
        stream.write(data)

    def receive(self, data: bytes) -> None:
        """Bytes from the host."""
        if self.sim.fault_active("link-drop"):
            return
        if self.sim.fault_active("garbage") and self.sim.rng.random() < 0.3:
            flipped = bytearray(data)
            flipped[self.sim.rng.randrange(len(flipped))] ^= 1 << self.sim.rng.randrange(8)
            data = bytes(flipped)
        self.rx_log.append((self.sim.now_s(), data))
        self.handle(data)
        self._flush_events()

    def handle(self, data: bytes) -> None:
        raise NotImplementedError

    def answers(self) -> bool:
        """False under ``ignore-commands``: the machine hears but does not answer."""
        return not self.sim.fault_active("ignore-commands")

    # ---------------------------------------------------------------- the machine's watchdog

    def command_seen(self) -> None:
        """A valid command arrived: it feeds the watchdog."""
        self.last_rx = self.sim.now_s()
        if self.watchdog_armed:
            self._arm()

    def arm_watchdog(self, armed: bool) -> None:
        self.watchdog_armed = armed and self.watchdog_s > 0
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.watchdog_armed:
            self._arm()

    def _arm(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.watchdog_s, self._expire)

    def _expire(self) -> None:
        self._watchdog = None
        self.watchdog_armed = False
        self._last_watchdog_t = self.sim.now_s()
        self.sim._watchdog_trip()
        self.on_watchdog()
        self.emit("watchdog-expired", last_rx_s=self.last_rx)
        self._flush_events()

    def on_watchdog(self) -> None:
        """What else this machine does when its watchdog expires."""

    # ---------------------------------------------------------------- firmware helpers

    def truth(self) -> BeltTruth:
        return self.sim.truth()

    def _run(self, req: Any) -> ResultCode:
        self.sim._advance()
        result = self.sim._execute(req, [])
        self.sim._mark()
        return result

    def start(self) -> bool:
        return self._run(StartOrResume()) is ResultCode.SUCCESS

    def stop(self) -> bool:
        return self._run(StopOrPause(pause=False)) is ResultCode.SUCCESS

    def set_speed(self, signed_kmh: float) -> bool:
        """Target speed; 0 holds the belt at 0 without ending the run."""
        if signed_kmh == 0:
            self.sim._advance()
            self.sim._target_kmh = 0.0
            self.sim._mark()
            return True
        return self._run(SetTargetSpeed(signed_kmh)) is ResultCode.SUCCESS

    def set_incline(self, pct: float) -> bool:
        return self._run(SetTargetInclination(pct)) is ResultCode.SUCCESS

    def set_direction(self, reverse: bool) -> bool:
        """Only at standstill (the firmware's rule)."""
        self.sim._advance()
        return self.sim._direction_write(b"\x01" if reverse else b"\x00") == 0

    # ---------------------------------------------------------------- run

    async def run(self) -> None:
        """Physics and the event lines, until cancelled."""
        sim_task = asyncio.get_running_loop().create_task(self.sim.run())
        period = 1.0 / self.profile.control.telemetry_hz
        try:
            while True:
                await self.sim.clock.sleep(period)
                self.tick()
                self._flush_events()
        finally:
            sim_task.cancel()
            if self._watchdog is not None:
                self._watchdog.cancel()

    def tick(self) -> None:
        """Once per telemetry period (pushed feedback goes out here)."""

    # ---------------------------------------------------------------- events

    def emit(self, event: str, **extra: Any) -> None:
        if not self._events:
            return
        t = self.truth()
        line = {"t": round(self.sim.now_s(), 4), "event": event,
                "speed_kmh": round(t.speed_kmh, 3), "direction": str(t.direction),
                "incline_pct": round(t.incline_pct, 2), "running": t.running, **extra}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    def _flush_events(self) -> None:
        if not self._events:
            return
        events = self.sim.events
        while self._seen_events < len(events):
            t_s, what = events[self._seen_events]
            self._seen_events += 1
            self.emit(what, at_s=round(t_s, 4), speed_at_kmh=self._speed_at(t_s))
        speed = abs(self.truth().speed_kmh)
        if speed > 0 and not self._moving:
            self._moving = True
        elif speed == 0 and self._moving:
            self._moving = False
            self.emit("standstill", at_s=round(self._standstill_time(), 4))

    def _speed_at(self, t_s: float) -> float:
        """The belt speed at ``t_s`` from the physics trace (the snapshot at the event)."""
        for snap in reversed(self.sim.trace):
            if snap.t_s <= t_s + 1e-9:
                return round(snap.speed_kmh, 4)
        return 0.0

    def _standstill_time(self) -> float:
        """When the belt reached 0 (from the physics trace: the exact knee)."""
        at = self.sim.now_s()
        for snap in reversed(self.sim.trace):
            if snap.speed_kmh != 0:
                break
            at = snap.t_s
        return at if math.isfinite(at) else self.sim.now_s()


class CommandPersonality(Personality):
    """A machine that answers one-byte-coded commands (Biodex, TrackMaster, Woodway): the
    codec module (``codec``: its ``command_decoder`` and ``encode_reply``), the speed step
    of ``wire.speed_unit``, and the command loop. Subclasses give ``execute`` (one valid
    command) and ``on_garbage`` (bytes that were no command: each machine's own answer)."""

    codec: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decoder = self.codec.command_decoder()
        self._garbage = 0
        self.kmh_per_step = 0.1 * (KMH_PER_MPH if self.profile.wire.speed_unit == "0.1mph"
                                   else 1.0)  # fmt: skip

    def reply(self, msg: Any) -> None:
        if self.answers():
            self.send(self.codec.encode_reply(msg))

    def handle(self, data: bytes) -> None:
        for msg in self.decoder.feed(data):
            if not self.answers():
                continue  # ignore-commands: heard, not acted on, not answered, no feed
            self.command_seen()
            self.execute(msg)
        if self.decoder.garbage_bytes != self._garbage:
            self._garbage = self.decoder.garbage_bytes
            self.on_garbage()

    def execute(self, msg: Any) -> None:
        raise NotImplementedError

    def on_garbage(self) -> None:
        raise NotImplementedError
