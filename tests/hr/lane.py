"""A simulated lane for the supervisor tests: belt physics -> heart model -> simulated strap
(and optionally the treadmill's own HR field) -> :class:`HRSupervisor` -> belt.

No controller: the belt follows what a controller would command from the supervisor's
status. Ungoverned, the program's speed; governed, ``wanted_speed_kmh``; on
``CONTROLLED_STOP`` the belt decelerates to 0 at the normal decel (a controlled stop, the
user-stop path) and stays. The belt moves at most ``ramp_kmh_per_s`` per second (0.9 km/h/s
= 0.25 m/s², the reference profile's reverse ramps). The control loop ticks every
``dt`` seconds; the strap notifies once a second; the treadmill (when ``treadmill`` is
``"true"`` or ``"fake-199"``) sends its HR field with every tick: ``"true"`` is the
person's heart (hand grips or a strap paired to the console) with its own ~1 bpm
variability, updated once a second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from treadctl.hr.supervisor import Decision, HRStatus, HRSupervisor
from treadctl.limits import EffectiveLimits, effective_limits
from treadctl.profiles import load_profile
from treadctl.programs.model import Segment
from treadctl.simulator.heart import HeartModel, Person, SimStrap
from treadctl.types import Direction

REF_LIMITS = effective_limits(load_profile("treadctl-reference"))


@dataclass
class Step:
    t: float
    belt_kmh: float
    true_hr: float
    status: HRStatus


@dataclass
class Lane:
    direction: Direction
    segment: Segment | None = None  # governed segment from t=0, or None: ungoverned
    speeds: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 2.0)])
    faults: str | None = None
    strap: bool = True
    treadmill: Literal[None, "true", "fake-199"] = None
    limits: EffectiveLimits = REF_LIMITS
    ceiling_bpm: float = 185.0
    dt: float = 0.25
    ramp_kmh_per_s: float = 0.9
    seed: int = 0
    person: Person | None = None
    steps: list[Step] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.belt = 0.0
        self.t = 0.0
        self.model = HeartModel(self.person, seed=self.seed)
        self.sim_strap = SimStrap(lambda: (self.belt, 0.0, self.direction), model=self.model,
                                  faults=self.faults, seed=self.seed)
        self.sup = HRSupervisor(ceiling_bpm=self.ceiling_bpm, strap_bound=self.strap)
        self.stopping = False
        self.stop_t: float | None = None
        self._tm_rng = random.Random(self.seed + 99)
        self._tm_bpm = round(self.model.hr_bpm)
        if self.segment is not None:
            self._collect(self.sup.begin_segment(self.segment, self.limits, 0.0))

    def _collect(self, s: HRStatus) -> HRStatus:
        self.events.extend({**e, "t": self.t} for e in s.events)
        return s

    def begin(self, segment: Segment, direction: Direction | None = None) -> None:
        """A governed segment starts now (the belt standing when the direction changes)."""
        if direction is not None:
            assert self.belt == 0.0, "the belt changes direction at a standstill"
            self.direction = direction
        self.segment = segment
        self._collect(self.sup.begin_segment(segment, self.limits, self.t))

    def end(self, speeds: list[tuple[float, float]]) -> None:
        """The governed segment ends; the program's speeds from here on."""
        self.segment = None
        self.speeds = speeds
        self._collect(self.sup.end_segment(self.t))

    def _program_speed(self) -> float:
        speed = 0.0
        for start, v in self.speeds:
            if self.t >= start:
                speed = v
        return speed

    def run(self, seconds: float) -> Lane:
        n = round(seconds / self.dt)
        status = self.sup.status
        for _ in range(n):
            self.t = round(self.t + self.dt, 9)
            if self.stopping:
                goal = 0.0
            elif self.segment is not None and status.wanted_speed_kmh is not None:
                goal = status.wanted_speed_kmh
            else:
                goal = self._program_speed()
            step = self.ramp_kmh_per_s * self.dt
            self.belt = goal if abs(goal - self.belt) <= step else (
                self.belt + (step if goal > self.belt else -step))
            self.sim_strap.advance(self.t)
            if self.strap and abs(self.t - round(self.t)) < 1e-9:
                raw = self.sim_strap.sample(self.t)
                if raw is not None:
                    self._collect(self.sup.strap(raw, self.t))
            if self.treadmill == "true":
                if abs(self.t - round(self.t)) < 1e-9:
                    self._tm_bpm = round(self.model.hr_bpm + self._tm_rng.gauss(0.0, 1.0))
                self._collect(self.sup.treadmill_hr(self._tm_bpm, self.t))
            elif self.treadmill == "fake-199":
                self._collect(self.sup.treadmill_hr(199, self.t))
            status = self._collect(self.sup.tick(self.t, self.belt, 0.0, self.direction))
            if status.decision is Decision.CONTROLLED_STOP and not self.stopping:
                self.stopping = True
                self.stop_t = self.t
            self.steps.append(Step(self.t, self.belt, self.model.hr_bpm, status))
        return self

    # ------------------------------------------------------------------ judging

    def between(self, t0: float, t1: float) -> list[Step]:
        return [s for s in self.steps if t0 <= s.t < t1]

    def first(self, pred: object, after: float = 0.0) -> float | None:
        for s in self.steps:
            if s.t >= after and pred(s):  # type: ignore[operator]
                return s.t
        return None

    def event_types(self) -> list[str]:
        return [str(e["type"]) for e in self.events]


def governed(direction: Direction, zone: tuple[float, float], *, speed: float = 3.0,
             floor: float = 2.0, ceiling: float = 5.5, duration_s: float = 900) -> Segment:
    return Segment(duration_s=duration_s, speed_kmh=speed, direction=direction,
                   hr_zone_bpm=zone, min_speed_kmh=floor, max_speed_kmh=ceiling)
