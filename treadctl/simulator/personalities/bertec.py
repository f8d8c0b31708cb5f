"""The Bertec treadmill personality (:mod:`treadctl.protocols.bertec`), over TCP.

Behaviour modelled: 32-byte feedback pushed at ``control.telemetry_hz`` (both belts from
the one simulated belt) whether or not the host sends anything; 64-byte commands whose
complement check fails are dropped without an answer; the first moving setpoint starts
the belt and a 0 setpoint stops it; both belts must get the same speed (the simulator has
one belt: a split setpoint is ignored); a sign change while the belt moves is ignored (the
real panel's behaviour is not public); the commanded acceleration is not modelled (the profile's is
used). No watchdog (none documented). The safety key stops the belt (physics).
"""

from __future__ import annotations

import math

from treadctl.protocols import bertec as bt
from treadctl.simulator.personalities.base import Personality


class BertecPersonality(Personality):
    protocol = "bertec"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.decoder = bt.command_decoder()
        self.ignored = 0

    def handle(self, data: bytes) -> None:
        for cmd in self.decoder.feed(data):
            if self.answers():  # ignore-commands: heard, not acted on
                self.command_seen()
                self.execute(cmd)

    def execute(self, cmd: bt.Command) -> None:
        if cmd.speed_right != cmd.speed_left:
            self.ignored += 1
            return
        kmh = cmd.speed_right / 1000 * 3.6
        pct = round(math.tan(math.radians(cmd.incline / 100)) * 100, 1)
        t = self.truth()
        if kmh == 0:
            if t.running:
                self.stop()  # a 0 setpoint is how the panel is stopped
            else:
                self.set_speed(0.0)
        else:
            reverse = kmh < 0
            if reverse != (t.direction.value == "reverse") and t.speed_kmh != 0:
                self.ignored += 1
                return
            if not t.running:
                self.start()
            p = self.profile
            mag = min(max(abs(kmh), p.speed.min_kmh),
                      p.reverse.max_speed_kmh if reverse else p.speed.max_kmh)
            if not self.set_speed(-mag if reverse else mag):
                self.ignored += 1
        if abs(pct - self.sim._incline_goal) >= 0.05:
            self.set_incline(pct)

    def tick(self) -> None:
        if self.stream is None or self.sim.fault_active("telemetry-stop"):
            return
        t = self.truth()
        mm_s = round(t.speed_kmh / 3.6 * 1000)
        centideg = round(math.degrees(math.atan(t.incline_pct / 100)) * 100)
        self.send(bt.encode_feedback(bt.Feedback(mm_s, mm_s, incline=centideg)))
