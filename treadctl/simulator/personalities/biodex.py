"""The Biodex RTM 400/500 personality: answers the RS-232 protocol of
:mod:`treadctl.protocols.biodex` over the simulator's physics.

Behaviour modelled: every command is echoed, requests are answered with their data;
garbage, an unknown code, a value out of the profile's range and a direction change while
the belt moves are answered with ``AF`` (NACK) and flagged in the Comm Status byte; a pulled
safety key sets System Status 1 bit 6 (lanyard) and the belt stops under the key's
deceleration; start with the lanyard off is refused. No host watchdog (none documented).
"""

from __future__ import annotations

from treadctl.protocols import biodex as bx
from treadctl.simulator.personalities.base import CommandPersonality
from treadctl.types import Direction


class BiodexPersonality(CommandPersonality):
    protocol = "biodex"
    codec = bx

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.comm_status = 0

    def nack(self, bit: int) -> None:
        self.comm_status |= bit
        self.reply(bx.Nack())

    def on_garbage(self) -> None:
        self.nack(bx.COMM_ILLEGAL)

    def execute(self, msg: bx.HostMessage) -> None:
        p = self.profile
        if isinstance(msg, bx.Read):
            self.answer(msg.request)
            return
        if isinstance(msg, bx.SetDirection):
            ok = self.set_direction(msg.reverse)
            self.reply(bx.Ack(bx.Code.SET_DIRECTION)) if ok else self.nack(bx.COMM_RANGE)
            return
        if isinstance(msg, bx.SetValue):
            if msg.code is bx.Code.SET_SPEED:
                kmh = msg.value * self.kmh_per_step
                reverse = self.truth().direction is Direction.REVERSE
                cap = p.reverse.max_speed_kmh if reverse else p.speed.max_kmh
                ok = kmh == 0 or (p.speed.min_kmh - 0.05 <= kmh <= cap + 0.05)
                if ok:
                    kmh = min(max(kmh, p.speed.min_kmh), cap) if kmh else 0.0
                    signed = -kmh if reverse and self.sim._signed else kmh
                    ok = self.set_speed(signed)
            elif msg.code is bx.Code.SET_ELEVATION:
                ok = self.set_incline(msg.value * p.wire.elevation_step_pct)
            else:
                ok = True  # weight, time: accepted, no effect here
            self.reply(bx.Ack(msg.code)) if ok else self.nack(bx.COMM_RANGE)
            return
        if msg.code is bx.Code.START:
            self.reply(bx.Ack(msg.code)) if self.start() else self.nack(bx.COMM_HW_FAULT)
        elif msg.code is bx.Code.STOP:
            self.stop()
            self.reply(bx.Ack(msg.code))
        elif msg.code is bx.Code.WHO_ARE_YOU:
            self.reply(bx.Identity("4"))
        elif msg.code is bx.Code.FIRMWARE_VERSION:
            self.reply(bx.FirmwareVersion("VER_1.00 treadctl-sim"))

    def answer(self, req: bx.Request) -> None:
        t = self.truth()
        if req is bx.Request.STATUS:
            system = 0 if t.safety_key_in else bx.SYS_LANYARD
            self.reply(bx.Status(self.comm_status, system, 0))
            self.comm_status = 0
        elif req is bx.Request.DIRECTION:
            self.reply(bx.Direction(t.direction is Direction.REVERSE))
        elif req is bx.Request.SPEED:
            self.reply(bx.Value(req, min(999, round(abs(t.speed_kmh) / self.kmh_per_step))))
        elif req is bx.Request.ELEVATION:
            step = self.profile.wire.elevation_step_pct
            self.reply(bx.Value(req, min(99, round(t.incline_pct / step))))
        elif req is bx.Request.DISTANCE:
            self.reply(bx.Value(req, min(9999, int(t.distance_m / 10))))
        else:
            self.reply(bx.Value(req, 0))
