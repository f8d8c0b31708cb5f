"""The Woodway personality (pyWoodway command set, :mod:`treadctl.protocols.woodway`).

Behaviour modelled: replies are command + 10h; out-of-range speeds and elevations are
CLAMPED silently to the profile's limits (as the PPS manual says the machine does);
``A0`` arms the comm timer (``wire.watchdog_ms``, length not public), ``A9`` starts
without it; when the timer expires the belt stops and the next command is answered
``BD``; a speed command whose direction differs while the belt moves is answered ``BE``;
garbage is answered ``BF``. The safety key stops the belt (physics); nothing on the wire
says so.
"""

from __future__ import annotations

from treadctl.protocols import woodway as ww
from treadctl.simulator.personalities.base import CommandPersonality
from treadctl.types import Direction


class WoodwayPersonality(CommandPersonality):
    protocol = "woodway"
    codec = ww

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.timed_out = False
        self.clamped = 0

    def on_watchdog(self) -> None:
        self.timed_out = True

    def on_garbage(self) -> None:
        self.reply(ww.Fault(ww.Error.INVALID_COMMAND))

    def execute(self, msg: ww.HostMessage) -> None:
        if self.timed_out:  # the first command after the comm timer expired: BD instead
            self.timed_out = False
            self.reply(ww.Fault(ww.Error.MASTER_TIMEOUT))
            return
        p = self.profile
        if isinstance(msg, ww.SetSpeed):
            kmh = msg.tenths_mph * self.kmh_per_step
            t = self.truth()
            turn = msg.reverse != (self.sim._dir_cmd < 0)  # against the commanded direction
            if turn and (t.speed_kmh != 0 or not self.set_direction(msg.reverse)):
                self.reply(ww.Fault(ww.Error.INVALID_DATA))
                return
            cap = p.reverse.max_speed_kmh if msg.reverse else p.speed.max_kmh
            if kmh:
                clamped = min(max(kmh, p.speed.min_kmh), cap)  # Woodway: no error, clamp
                self.clamped += clamped != kmh
                kmh = clamped
            ok = self.set_speed(-kmh if msg.reverse else kmh)
            self.reply(ww.Ack(ww.Code.SET_SPEED) if ok else ww.Fault(ww.Error.INVALID_DATA))
        elif isinstance(msg, ww.SetElevation):
            lo, hi = p.incline.min_pct, p.incline.max_pct
            if self.truth().direction is Direction.REVERSE:
                lo, hi = max(lo, p.reverse.min_incline_pct), min(hi, p.reverse.max_incline_pct)
            pct = min(max(msg.tenths_pct / 10, lo), hi)
            self.set_incline(pct)
            self.reply(ww.Ack(ww.Code.SET_ELEVATION))
        elif msg.code in (ww.Code.START_WITH_TIMER, ww.Code.START):
            if self.start():
                self.arm_watchdog(msg.code is ww.Code.START_WITH_TIMER)
                self.reply(ww.Ack(msg.code))
            else:
                self.reply(ww.Fault(ww.Error.INVALID_DATA))
        elif msg.code in (ww.Code.AUTO_STOP, ww.Code.DISENGAGE):
            self.stop()
            self.arm_watchdog(False)
            self.reply(ww.Ack(msg.code))
        elif msg.code is ww.Code.TEST_COMMS:
            self.reply(ww.State(0x31 if self.truth().running else 0x30))
        elif msg.code is ww.Code.GET_SPEED:
            t = self.truth()
            steps = min(ww.MAX_SPEED_TENTHS_MPH, round(abs(t.speed_kmh) / self.kmh_per_step))
            self.reply(ww.Speed(steps, t.direction is Direction.REVERSE))
        elif msg.code is ww.Code.GET_ELEVATION:
            self.reply(ww.Elevation(round(self.truth().incline_pct * 10)))
        elif msg.code is ww.Code.GET_FIRMWARE:
            self.reply(ww.Firmware(0x01000000))
