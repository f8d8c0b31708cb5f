"""Fault plans for the simulator: what goes wrong, when, and for how long.

A plan is parsed from ``NAME@SECONDS[+DURATION][,...]`` (seconds since the simulator
started; without ``+DURATION`` the fault is permanent) or built from :class:`FaultWindow`
values. This module is pure data: :class:`simulator.SimTreadmill` applies the effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Every fault the simulator knows, with a one-line description (docs/simulator.md has more).
FAULTS: dict[str, str] = {
    "link-drop": "the link carries nothing in either direction",
    "telemetry-stop": "no Treadmill Data / Belt Direction notifications",
    "stuck-belt": "the speed controller ignores new targets and Stop; belt keeps its speed",
    "runaway": "the belt accelerates past its target at 0.3 m/s^2 until a stop acts",
    "ignore-commands": "Control Point writes are acked at GATT level but never answered",
    "wrong-direction": "the belt runs opposite to the commanded direction",
    "safety-key": "the safety key is pulled (re-inserted at the end of a +DURATION)",
    "garbage": "random bytes and bit-flipped frames on the link, both directions, in bursts",
    "slow-acks": "Control Point responses are delayed by 3x control.ack_timeout_ms",
    "control-lost": "control permission is revoked (ControlPermissionLost indicated)",
    "hr-spike": "the runner's heart rate jumps to 190 bpm and stays there",
}


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed; the message names the bad part."""


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One fault: active from ``start_s`` for ``duration_s`` (None = until the end)."""

    name: str
    start_s: float
    duration_s: float | None = None

    @property
    def end_s(self) -> float:
        return math.inf if self.duration_s is None else self.start_s + self.duration_s

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s

    def __str__(self) -> str:
        text = f"{self.name}@{self.start_s:g}"
        return text if self.duration_s is None else f"{text}+{self.duration_s:g}"


@dataclass
class FaultPlan:
    """The fault timeline of one simulator (times in seconds since it started)."""

    windows: list[FaultWindow] = field(default_factory=list)

    def add(self, window: FaultWindow) -> None:
        _check_name(window.name)
        self.windows.append(window)

    def active(self, name: str, t_s: float) -> bool:
        return any(w.name == name and w.active(t_s) for w in self.windows)

    def __str__(self) -> str:
        return ",".join(str(w) for w in self.windows)

    def __bool__(self) -> bool:
        return bool(self.windows)


def _check_name(name: str) -> None:
    if name not in FAULTS:
        raise FaultSpecError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")


def _seconds(text: str, what: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise FaultSpecError(f"{name}: bad {what} {text!r} (expected seconds >= 0)")
    return value


def parse_faults(spec: str) -> FaultPlan:
    """``"runaway@30,link-drop@60+5"`` -> a :class:`FaultPlan`; raises :class:`FaultSpecError`.

    The message quotes the bad part once and never the whole spec: every caller shows the
    spec itself (``--faults``, the device URL), so repeating it only hides the bad part.
    """
    plan = FaultPlan()
    if not spec.strip():
        return plan
    parts = spec.split(",")
    for number, raw_part in enumerate(parts, 1):
        part = raw_part.strip()
        if not part:
            raise FaultSpecError(f"entry {number} of {len(parts)} is empty")
        name, at, when = part.partition("@")
        name = name.strip()
        if not name:
            raise FaultSpecError(f"entry {number} of {len(parts)} has no fault name before '@'")
        _check_name(name)
        if not at:
            raise FaultSpecError(f"{name}: missing @SECONDS (expected NAME@SECONDS[+DURATION])")
        start_text, plus, duration_text = when.partition("+")
        start_s = _seconds(start_text.strip(), "start time", name)
        duration_s = None
        if plus:
            duration_s = _seconds(duration_text.strip(), "duration", name)
        plan.windows.append(FaultWindow(name, start_s, duration_s))
    return plan
    for raw_part in spec.split(","):
        part = raw_part.strip()
        if not part:
            raise FaultSpecError(f"empty entry in fault spec {spec!r}")
        name, at, when = part.partition("@")
        name = name.strip()
        _check_name(name, part)
        if not at:
            raise FaultSpecError(f"missing @SECONDS in {part!r} of {spec!r}")
        start_text, plus, duration_text = when.partition("+")
        start_s = _seconds(start_text.strip(), "start time", part, spec)
        duration_s = None
        if plus:
            duration_s = _seconds(duration_text.strip(), "duration", part, spec)
        plan.windows.append(FaultWindow(name, start_s, duration_s))
    return plan
