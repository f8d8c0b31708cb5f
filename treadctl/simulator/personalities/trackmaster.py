"""The TrackMaster TMX425/428 personality (:mod:`treadctl.protocols.trackmaster`).

Behaviour modelled: acks are command + 10h; ``A0`` starts with the Communication
Disconnect Stop armed (no command or status request for ``wire.watchdog_ms``, 500 ms per
the manual -> the belt stops and the elevation returns to 0, as the Medisoft 870-S manual
describes); ``A1`` starts without it; values outside the profile's range, and elevations
that are not a half percent, are refused with ``BE``; unknown codes and garbage with ``BF``.
Forward only. The safety key stops the belt (physics); the belt status then reads 31.
"""

from __future__ import annotations

from treadctl.protocols import trackmaster as tm
from treadctl.simulator.personalities.base import CommandPersonality


class TrackMasterPersonality(CommandPersonality):
    protocol = "trackmaster"
    codec = tm

    def on_watchdog(self) -> None:
        lo = self.profile.incline.min_pct
        self.sim._incline_goal = max(lo, min(0.0, self.profile.incline.max_pct))

    def on_garbage(self) -> None:
        self.reply(tm.Refused(out_of_range=False))

    def execute(self, msg: tm.HostMessage) -> None:
        p = self.profile
        if isinstance(msg, tm.Request):
            self.answer(msg.status)
            return
        if isinstance(msg, tm.SetValue):
            if msg.code is tm.Code.SET_SPEED:
                kmh = msg.value * self.kmh_per_step
                ok = p.speed.min_kmh - 0.05 <= kmh <= p.speed.max_kmh + 0.05
                ok = ok and self.set_speed(min(max(kmh, p.speed.min_kmh), p.speed.max_kmh))
            elif msg.code is tm.Code.SET_ELEVATION:
                pct = msg.value / 10
                ok = msg.value % 5 == 0 and p.incline.min_pct <= pct <= p.incline.max_pct
                ok = ok and self.set_incline(pct)
            else:
                ok = True  # time, protocol, stage, weight: accepted, no effect
            self.reply(tm.Ack(msg.code) if ok else tm.Refused(out_of_range=True))
            return
        code = msg.code
        if code in (tm.Code.START_CDS, tm.Code.START_NO_CDS):
            if self.start():
                self.arm_watchdog(code is tm.Code.START_CDS)
                self.reply(tm.Ack(code))
            else:
                self.reply(tm.Refused(out_of_range=True))
        elif code in (tm.Code.STOP, tm.Code.AUTO_STOP):
            self.stop()
            self.arm_watchdog(False)
            self.reply(tm.Ack(code))
        elif code is tm.Code.COOL_DOWN:
            self.set_speed(p.speed.min_kmh)
            self.set_incline(max(p.incline.min_pct, 0.0))
            self.reply(tm.Ack(code))
        elif code is tm.Code.TOGGLE_ACK_DATA:
            self.reply(tm.Refused(out_of_range=False))  # echo mode not modelled
        else:
            self.reply(tm.Ack(code))

    def answer(self, status: tm.Status) -> None:
        t = self.truth()
        if status is tm.Status.BELT:
            if not t.running:
                value = tm.BELT_STOPPED
            else:
                value = tm.BELT_RUNNING_CDS if self.watchdog_armed else tm.BELT_RUNNING_NO_CDS
            self.reply(tm.BeltStatus(value))
        elif status is tm.Status.ACTUAL_SPEED:
            self.reply(tm.Value(status, round(abs(t.speed_kmh) / self.kmh_per_step)))
        elif status is tm.Status.ACTUAL_ELEVATION:
            self.reply(tm.Value(status, round(t.incline_pct * 10)))
        elif status is tm.Status.SET_SPEED:
            self.reply(tm.Value(status, round(abs(t.target_speed_kmh) / self.kmh_per_step)))
        elif status is tm.Status.SET_ELEVATION:
            self.reply(tm.Value(status, round(self.sim._incline_goal * 10)))
        else:
            self.reply(tm.Value(status, 0))
