"""TrackMaster TMX425/428 driver over RS-232 / USB (codec: :mod:`treadctl.protocols.trackmaster`).

Forward only. The belt is only ever started with ``A0``, the Communication Disconnect Stop
armed: the treadmill stops the belt by itself when no command arrives within 0.5 s, so a
dead host stops it. The poll (``C0`` belt status, ``C1`` speed, ``C2`` elevation) runs every
``wire.poll_ms`` and is what feeds it. A running belt reporting CDS disabled (``33``: someone
started it from the console) latches ``cds-disarmed``; a belt that stops without our stop
latches ``machine-stopped`` (the protocol does not say why: stop key, lanyard, CDS).
"""

from __future__ import annotations

from typing import Any

from treadctl.drivers._request import RequestDriver
from treadctl.drivers.base import (
    NotConfirmed,
    Refused,
    Telemetry,
    check_incline,
    check_speed,
    wire_steps_to_kmh,
)
from treadctl.protocols import trackmaster as tm
from treadctl.types import Direction


class TrackMasterDriver(RequestDriver):
    protocol = "trackmaster"
    codec = tm

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.belt: int | None = None

    def _reply_lead(self, reply: Any) -> int:
        if isinstance(reply, tm.Ack):
            return int(reply.code) + 0x10
        if isinstance(reply, tm.BeltStatus):
            return 0xD0
        if isinstance(reply, tm.Value):
            return int(reply.status) + 0x10
        return -1

    def _is_error(self, reply: Any) -> bool:
        return isinstance(reply, tm.Refused)

    def _stop_message(self) -> Any:
        return tm.Command(tm.Code.STOP)

    async def _hello(self) -> None:
        await self._poll_once()

    async def _poll_once(self) -> None:
        belt = await self.request(tm.Request(tm.Status.BELT))
        self.belt = belt.value
        if belt.running and not belt.cds_armed:
            self.latch("cds-disarmed", "belt running with the Communication Disconnect Stop off")
        speed = await self.request(tm.Request(tm.Status.ACTUAL_SPEED))
        elev = await self.request(tm.Request(tm.Status.ACTUAL_ELEVATION))
        self.publish(Telemetry(
            t=self.clock.now(),
            speed_kmh=wire_steps_to_kmh(self.profile, speed.value),
            direction=Direction.FORWARD,
            incline_pct=elev.value / 10,
        ))

    async def start(self) -> None:
        await self._start_with(tm.Command(tm.Code.START_CDS))
        belt = await self.request(tm.Request(tm.Status.BELT))
        if belt.value == tm.BELT_RUNNING_NO_CDS:  # 31 (not moving yet) is re-read each poll
            self.latch("cds-disarmed", "after A0 the belt status reads 33 (CDS off)")
            raise NotConfirmed("the treadmill does not report the disconnect stop armed")

    async def set_speed(self, speed_kmh: float) -> None:
        check_speed(self.profile, speed_kmh)
        await self._send_speed(speed_kmh, lambda steps: tm.SetValue(tm.Code.SET_SPEED, steps))

    async def set_incline(self, incline_pct: float) -> None:
        check_incline(self.profile, incline_pct, reverse=False)
        tenths = round(incline_pct * 10)
        if abs(tenths - incline_pct * 10) > 1e-6 or tenths % 5:
            raise Refused(f"incline {incline_pct:g} % is not a multiple of 0.5 %")
        epoch = self._check_motion()
        await self.request(tm.SetValue(tm.Code.SET_ELEVATION, tenths), motion_epoch=epoch)

    async def set_direction(self, direction: Direction) -> None:
        if direction is not Direction.FORWARD:
            raise Refused(f"{self.profile.name} runs forward only")

    async def read_direction(self) -> Direction:
        return Direction.FORWARD
