"""The simulator's heart: a physiological model of the person on the belt and a simulated
chest strap with faults (docs/heart-rate.md).

Model (sources in docs/heart-rate.md):

* **workload** from the belt's speed, grade and direction: the ACSM walking and running
  equations, backward at +35 % of the net cost (:mod:`treadctl.hr.workload`);
* **steady-state heart rate** from the workload by the heart-rate reserve: the fraction of
  the VO2 reserve in use, ``(VO2 - 3.5) / (VO2max - 3.5)``, taken as the same fraction of
  the heart-rate reserve (Karvonen: ``HRrest + f * (HRmax - HRrest)``), with the
  age-predicted ``HRmax = 208 - 0.7 * age`` (Tanaka et al. 2001);
* **first-order kinetics**: ``dHR/dt = (HRss - HR) / tau`` (tau 30 s up, 45 s down by
  default; real responses have a faster vagal phase and a slow drift that this leaves out);
* a small seeded beat-to-beat variability (about 1 bpm), so a real heart never reads as a
  stuck value.

It is a test model with textbook constants, not a prediction for any one person.

The strap (:class:`SimStrap`) samples the model once per second and encodes a Heart Rate
Measurement (0x2A37) with contact bits and an RR-interval, unless a fault says otherwise:

``dropout``       nothing is sent (out of range, flat battery)
``contact-lost``  contact supported, not detected, 0 bpm (strap slipped off the skin)
``stuck``         the last value is repeated for the whole window
``spike``         every third second one reading 60..100 bpm too high (electrode noise)
``fake-199``      a constant 199 bpm (the fake value of a known field report)
``wrong-person``  the heart of somebody else: ``other`` (a second lane's model), or a
                  person walking steadily when no second lane is given

Faults use the simulator's timeline syntax, ``NAME@SECONDS[+DURATION][,...]``, in seconds
since the strap started (``sim-hr://?faults=SPEC``, :func:`parse_strap_faults`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from treadctl.clock import Clock, LoopClock
from treadctl.hr.codec import HeartRateMeasurement, encode_heart_rate_measurement, rr_units
from treadctl.hr.workload import REST_VO2, tanaka_hr_max, vo2_ml_kg_min
from treadctl.simulator.faults import FaultSpecError, FaultWindow
from treadctl.types import Direction

STRAP_FAULTS: dict[str, str] = {
    "dropout": "the strap sends nothing (out of range, flat battery)",
    "contact-lost": "the strap reports no skin contact and 0 bpm",
    "stuck": "the strap repeats its last value",
    "spike": "every third second one reading 60-100 bpm too high",
    "fake-199": "a constant 199 bpm",
    "wrong-person": "the heart of somebody else (a second lane)",
}
FAKE_BPM = 199
SAMPLE_PERIOD_S = 1.0


@dataclass(frozen=True)
class Person:
    age_years: float = 35.0
    hr_rest_bpm: float = 70.0
    vo2max_ml_kg_min: float = 40.0
    tau_up_s: float = 30.0
    tau_down_s: float = 45.0
    variability_bpm: float = 1.0

    @property
    def hr_max_bpm(self) -> float:
        return tanaka_hr_max(self.age_years)


Workload = tuple[float, float, Direction]  # speed km/h (magnitude), grade %, direction


class HeartModel:
    """One person's heart rate on a workload, integrated in time."""

    def __init__(self, person: Person | None = None, *, seed: int = 0) -> None:
        self.person = person or Person()
        self.hr_bpm = self.person.hr_rest_bpm
        self._rng = random.Random(seed)
        self._noise = 0.0

    def steady_state(self, speed_kmh: float, grade_pct: float = 0.0,
                     direction: Direction = Direction.FORWARD) -> float:
        p = self.person
        vo2 = vo2_ml_kg_min(speed_kmh, grade_pct, direction)
        fraction = (vo2 - REST_VO2) / (p.vo2max_ml_kg_min - REST_VO2) if speed_kmh else 0.0
        fraction = min(max(fraction, 0.0), 1.0)
        return p.hr_rest_bpm + fraction * (p.hr_max_bpm - p.hr_rest_bpm)

    def step(self, dt: float, workload: Workload) -> float:
        """Advance ``dt`` seconds at ``workload``; returns the true HR (float)."""
        if dt <= 0:
            return self.hr_bpm
        target = self.steady_state(*workload)
        tau = self.person.tau_up_s if target > self.hr_bpm else self.person.tau_down_s
        self.hr_bpm += (target - self.hr_bpm) * (1.0 - math.exp(-dt / tau))
        return self.hr_bpm

    def observed(self) -> float:
        """The true HR plus beat-to-beat variability (an AR(1) wobble of ~1 bpm)."""
        sd = self.person.variability_bpm
        self._noise = 0.7 * self._noise + self._rng.gauss(0.0, sd * 0.714)
        return self.hr_bpm + self._noise


def parse_strap_faults(spec: str | None) -> list[FaultWindow]:
    """``"dropout@30+10,fake-199@60"`` -> fault windows; :class:`FaultSpecError` otherwise."""
    out: list[FaultWindow] = []
    if not spec or not spec.strip():
        return out
    parts = spec.split(",")
    for number, raw in enumerate(parts, 1):
        part = raw.strip()
        name, at, when = part.partition("@")
        name = name.strip()
        if not name:
            raise FaultSpecError(f"entry {number} of {len(parts)} has no fault name")
        if name not in STRAP_FAULTS:
            raise FaultSpecError(
                f"unknown strap fault {name!r} (known: {', '.join(STRAP_FAULTS)})")
        if not at:
            raise FaultSpecError(f"{name}: missing @SECONDS (expected NAME@SECONDS[+DURATION])")
        start_text, plus, duration_text = when.partition("+")
        start = _seconds(start_text, "start time", name)
        duration = _seconds(duration_text, "duration", name) if plus else None
        out.append(FaultWindow(name, start, duration))
    return out


def _seconds(text: str, what: str, name: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise FaultSpecError(f"{name}: bad {what} {text.strip()!r} (expected seconds >= 0)")
    return value


class SimStrap:
    """A chest strap on the person of ``model``, whose workload ``workload()`` reports (the
    lane's belt truth), sampled on demand. Pure apart from its seeded randomness: the caller
    passes the time (seconds since the strap started)."""

    def __init__(
        self,
        workload: Callable[[], Workload],
        *,
        model: HeartModel | None = None,
        faults: str | list[FaultWindow] | None = None,
        other: HeartModel | None = None,
        other_workload: Callable[[], Workload] | None = None,
        seed: int = 0,
    ) -> None:
        self.workload = workload
        self.model = model or HeartModel(seed=seed)
        self.faults = parse_strap_faults(faults) if isinstance(faults, str) or faults is None \
            else list(faults)
        self.other = other or HeartModel(Person(age_years=50, hr_rest_bpm=62), seed=seed + 1)
        self.other_workload = other_workload or (lambda: (4.0, 0.0, Direction.FORWARD))
        if other is None:
            # Somebody already walking steadily on the next lane.
            self.other.hr_bpm = self.other.steady_state(*self.other_workload())
        self._t = 0.0
        self._rng = random.Random(seed + 7)
        self._last_sent: HeartRateMeasurement | None = None
        self._sample_n = 0

    def active(self, name: str, t: float) -> bool:
        return any(w.name == name and w.active(t) for w in self.faults)

    def advance(self, t: float) -> None:
        """Integrate both hearts up to ``t`` (in steps of at most one second)."""
        while self._t < t:
            dt = min(1.0, t - self._t)
            self.model.step(dt, self.workload())
            self.other.step(dt, self.other_workload())
            self._t += dt

    def true_hr(self) -> float:
        return self.model.hr_bpm

    def sample(self, t: float) -> bytes | None:
        """The notification the strap sends at ``t`` (None: it sends nothing)."""
        self.advance(t)
        self._sample_n += 1
        if self.active("dropout", t):
            return None
        if self.active("contact-lost", t):
            m = HeartRateMeasurement(bpm=0, contact_supported=True, contact_detected=False)
        elif self.active("stuck", t) and self._last_sent is not None:
            m = self._last_sent
        elif self.active("fake-199", t):
            m = HeartRateMeasurement(bpm=FAKE_BPM, contact_supported=True,
                                     contact_detected=True)
        else:
            heart = self.other if self.active("wrong-person", t) else self.model
            bpm = heart.observed()
            if self.active("spike", t) and self._sample_n % 3 == 0:
                bpm += self._rng.uniform(60, 100)
            value = max(1, min(255, round(bpm)))
            m = HeartRateMeasurement(
                bpm=value, contact_supported=True, contact_detected=True,
                rr_intervals=(rr_units(60.0 / max(bpm, 20.0)),), rr_present=True,
            )
        self._last_sent = m
        return encode_heart_rate_measurement(m)


def belt_workload(truth: Callable[[], object]) -> Callable[[], Workload]:
    """A workload source from a simulator's ``truth()`` (:class:`BeltTruth`)."""

    def read() -> Workload:
        t = truth()
        return (abs(t.speed_kmh), t.incline_pct, t.direction)  # type: ignore[attr-defined]

    return read


class SimStrapSource:
    """The simulated strap as an HR source on the loop's (virtual) clock: one notification
    per second to ``on_value(bytes)`` until :meth:`close`. Same surface as the BLE strap
    (:class:`treadctl.hr.strap.StrapSource`)."""

    source = "strap"

    def __init__(self, strap: SimStrap, clock: Clock | None = None,
                 name: str = "sim-hr://") -> None:
        self.strap = strap
        self.name = name
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self, on_value: Callable[[bytes], object]) -> None:
        clock = self._clock or LoopClock()
        t0 = clock.now()

        async def run() -> None:
            while True:
                await clock.sleep(SAMPLE_PERIOD_S)
                value = self.strap.sample(clock.now() - t0)
                if value is not None:
                    on_value(value)

        self._task = asyncio.get_running_loop().create_task(run(), name="sim-hr strap")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
