"""A closed loop for the HR tests: belt -> heart model -> simulated strap -> codec ->
plausibility filter -> governor -> belt, one step per second of virtual time.

The belt follows the governor's setpoint at the ramp limit (``ramp_kmh_per_s``), as the
control core's planner does; workload comes from the belt's speed, grade and direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from treadctl.hr.codec import decode_heart_rate_measurement
from treadctl.hr.filter import CeilingMonitor, HRFilter, HRReading
from treadctl.hr.governor import Governor, GovernorOutput
from treadctl.hr.workload import met
from treadctl.simulator.heart import HeartModel, SimStrap
from treadctl.types import Direction


@dataclass
class Step:
    t: float
    belt_kmh: float
    true_hr: float
    raw: bytes | None
    reading: HRReading
    out: GovernorOutput | None
    ceiling: str


@dataclass
class Loop:
    direction: Direction
    governor: Governor | None
    speed_kmh: float
    grade_pct: float = 0.0
    faults: str | None = None
    ramp_kmh_per_s: float = 0.9  # 0.25 m/s^2, the reference profile's reverse accel
    seed: int = 0
    ceiling_bpm: float = 185.0
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.belt = 0.0
        self.target = self.speed_kmh
        self.model = HeartModel(seed=self.seed)
        self.strap = SimStrap(lambda: (self.belt, self.grade_pct, self.direction),
                              model=self.model, faults=self.faults, seed=self.seed)
        self.filter = HRFilter()
        self.ceiling = CeilingMonitor()
        self.stopped = False

    def run(self, seconds: int) -> Loop:
        start = len(self.steps)
        for k in range(start + 1, start + seconds + 1):
            t = float(k)
            step = self.ramp_kmh_per_s
            goal = 0.0 if self.stopped else self.target
            self.belt = goal if abs(goal - self.belt) <= step else (
                self.belt + (step if goal > self.belt else -step))
            raw = self.strap.sample(t)
            w = met(self.belt, self.grade_pct, self.direction)
            if raw is None:
                r = self.filter.tick(t, w)
            else:
                r = self.filter.update(decode_heart_rate_measurement(raw), t, w)
            out = None
            if self.governor is not None and not self.stopped:
                out = self.governor.update(t, r)
                self.target = out.speed_kmh
                if out.stop:
                    self.stopped = True
            decision = self.ceiling.update(r, self.ceiling_bpm)
            self.steps.append(Step(t, self.belt, self.model.hr_bpm, raw, r, out,
                                   decision.action))
        return self
