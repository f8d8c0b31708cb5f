"""Limit layers and how they combine: firmware profile ∩ treadctl defaults ∩ site ∩ program.

This module owns the :class:`Limits` layer (every field optional: ``None`` = no constraint at
this level), the concrete :class:`EffectiveLimits` the planner, safety layer and program
validation work with, and the rule that combines them: the tightest value wins (the smallest
of the maxima, the largest of the minima). A layer can therefore only tighten; a value looser
than what is already in force has no effect, and :func:`loosened_fields` reports it so
``treadctl programs validate`` and the daemon's config check can warn about it.

treadctl's own defaults form a layer under every site and program (docs/safety.md,
docs/reverse-training.md):
reverse speed at most :data:`DEFAULT_REVERSE_MAX_SPEED_KMH`, heart-rate ceiling
:data:`DEFAULT_MAX_HR_BPM`, session length at most :data:`DEFAULT_MAX_DURATION_S`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Literal

from treadctl.profiles import FirmwareProfile
from treadctl.types import Direction

#: Unharnessed gym use stays well below the 8–10 km/h trained runners reach backward.
DEFAULT_REVERSE_MAX_SPEED_KMH: Final = 6.0
#: Heart-rate ceiling interlock when nobody sets a tighter one (~ 220 - age for age 35).
DEFAULT_MAX_HR_BPM: Final = 185.0
#: Longest session treadctl runs unless a site or program asks for less (4 h).
DEFAULT_MAX_DURATION_S: Final = 4 * 3600.0


class LimitsError(ValueError):
    """A limits table that cannot be used; the message names the layer and field."""


Bound = Literal["max", "min"]

#: Every field of :class:`Limits` and whether it is an upper ("max") or lower ("min") bound;
#: that decides which value is the tighter one.
FIELD_BOUNDS: Final[Mapping[str, Bound]] = {
    "max_speed_kmh": "max",
    "min_speed_kmh": "min",
    "reverse_max_speed_kmh": "max",
    "accel_mps2": "max",
    "decel_mps2": "max",
    "reverse_accel_mps2": "max",
    "reverse_decel_mps2": "max",
    "min_incline_pct": "min",
    "max_incline_pct": "max",
    "reverse_min_incline_pct": "min",
    "reverse_max_incline_pct": "max",
    "incline_rate_pct_per_s": "max",
    "max_hr_bpm": "max",
    "max_duration_s": "max",
}
_UNITS: Final[Mapping[str, str]] = {
    "max_speed_kmh": "km/h",
    "min_speed_kmh": "km/h",
    "reverse_max_speed_kmh": "km/h",
    "accel_mps2": "m/s²",
    "decel_mps2": "m/s²",
    "reverse_accel_mps2": "m/s²",
    "reverse_decel_mps2": "m/s²",
    "min_incline_pct": "%",
    "max_incline_pct": "%",
    "reverse_min_incline_pct": "%",
    "reverse_max_incline_pct": "%",
    "incline_rate_pct_per_s": "%/s",
    "max_hr_bpm": "bpm",
    "max_duration_s": "s",
}
# Inclines may be negative (decline treadmills); everything else is a magnitude.
_SIGNED: Final = frozenset(
    {"min_incline_pct", "max_incline_pct", "reverse_min_incline_pct", "reverse_max_incline_pct"}
)
# Rates and caps that must be strictly positive to mean anything.
_POSITIVE: Final = frozenset(
    {
        "max_speed_kmh",
        "reverse_max_speed_kmh",
        "accel_mps2",
        "decel_mps2",
        "reverse_accel_mps2",
        "reverse_decel_mps2",
        "incline_rate_pct_per_s",
        "max_hr_bpm",
        "max_duration_s",
    }
)
# (lower, upper) pairs that must not cross within one layer or in the result.
_PAIRS: Final = (
    ("min_speed_kmh", "max_speed_kmh"),
    ("min_speed_kmh", "reverse_max_speed_kmh"),
    ("min_incline_pct", "max_incline_pct"),
    ("reverse_min_incline_pct", "reverse_max_incline_pct"),
)


def unit_of(field_name: str) -> str:
    """The unit of a limits field, for messages ("km/h", "%", ...)."""
    return _UNITS.get(field_name, "")


@dataclass(frozen=True)
class Limits:
    """One layer of limits (site config or program); ``None`` = no constraint here."""

    max_speed_kmh: float | None = None
    min_speed_kmh: float | None = None
    reverse_max_speed_kmh: float | None = None
    accel_mps2: float | None = None
    decel_mps2: float | None = None
    reverse_accel_mps2: float | None = None
    reverse_decel_mps2: float | None = None
    min_incline_pct: float | None = None
    max_incline_pct: float | None = None
    reverse_min_incline_pct: float | None = None
    reverse_max_incline_pct: float | None = None
    incline_rate_pct_per_s: float | None = None
    max_hr_bpm: float | None = None
    max_duration_s: float | None = None

    def items(self) -> list[tuple[str, float]]:
        """The fields that are set, in declaration order."""
        out: list[tuple[str, float]] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out.append((f.name, value))
        return out

    def to_dict(self) -> dict[str, float]:
        """The set fields only: the same shape :func:`limits_from_dict` reads."""
        return dict(self.items())


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits in force for one session: every field concrete."""

    max_speed_kmh: float
    min_speed_kmh: float
    reverse_max_speed_kmh: float
    accel_mps2: float
    decel_mps2: float
    reverse_accel_mps2: float
    reverse_decel_mps2: float
    min_incline_pct: float
    max_incline_pct: float
    reverse_min_incline_pct: float
    reverse_max_incline_pct: float
    incline_rate_pct_per_s: float
    max_hr_bpm: float
    max_duration_s: float
    speed_increment_kmh: float
    incline_increment_pct: float
    reverse_allowed: bool
    standstill_dwell_s: float
    #: Rear-facing mode (docs/safety.md, "Rear-facing mode"): a forward-only treadmill runs
    #: reverse segments with the belt forward and the user facing the rear. Reverse
    #: segments are then allowed (``reverse_allowed``) under the reverse cap and ramps.
    rear_facing: bool = False

    def tightened(self, layer: Limits | None) -> EffectiveLimits:
        """These limits with ``layer`` applied on top: tightest wins, never looser.

        Never raises: layers that contradict each other (a minimum above its maximum) give
        limits no setpoint can meet, which :meth:`contradictions` lists and program
        validation reports before anything moves.
        """
        if layer is None:
            return self
        changes: dict[str, Any] = {}
        for name, value in layer.items():
            current: float = getattr(self, name)
            tighter = min(current, value) if FIELD_BOUNDS[name] == "max" else max(current, value)
            if tighter != current:
                changes[name] = tighter
        return replace(self, **changes) if changes else self

    def contradictions(self) -> list[str]:
        """Pairs of limits that exclude each other (empty when the limits are usable)."""
        out: list[str] = []
        for low, high in _PAIRS:
            if high == "reverse_max_speed_kmh" and not self.reverse_allowed:
                continue  # the reverse cap is irrelevant on forward-only firmware
            lo: float = getattr(self, low)
            hi: float = getattr(self, high)
            if lo > hi:
                out.append(
                    f"{low} = {lo:g} {unit_of(low)} is above {high} = {hi:g} {unit_of(high)}: "
                    "no setpoint can satisfy both (check the site and program limits)"
                )
        return out

    def max_speed_for(self, direction: Direction) -> float:
        """Highest belt speed magnitude allowed in ``direction`` (km/h)."""
        if direction is Direction.REVERSE:
            return min(self.reverse_max_speed_kmh, self.max_speed_kmh)
        return self.max_speed_kmh

    def incline_range_for(self, direction: Direction) -> tuple[float, float]:
        """(min, max) incline in ``direction`` (%)."""
        if direction is Direction.REVERSE:
            return self.reverse_min_incline_pct, self.reverse_max_incline_pct
        return self.min_incline_pct, self.max_incline_pct

    def accel_for(self, direction: Direction) -> float:
        """Belt acceleration limit in ``direction`` (m/s²)."""
        return self.reverse_accel_mps2 if direction is Direction.REVERSE else self.accel_mps2

    def decel_for(self, direction: Direction) -> float:
        """Normal (non-stop) belt deceleration limit in ``direction`` (m/s²)."""
        return self.reverse_decel_mps2 if direction is Direction.REVERSE else self.decel_mps2


def rear_facing_refusal(profile: FirmwareProfile) -> str | None:
    """Why ``profile`` cannot run rear-facing (None: it can). The mode is for forward-only
    treadmills only: a machine that reverses its belt runs reverse segments backward."""
    if profile.supports_reverse:
        return (
            f"rear-facing mode is for forward-only treadmills: profile {profile.name} can "
            "run its belt in reverse, so reverse segments run with the belt reversed"
        )
    return None


def profile_limits(profile: FirmwareProfile, *, rear_facing: bool = False) -> EffectiveLimits:
    """The profile's own limits combined with treadctl's defaults (no site, no program).

    ``rear_facing`` (forward-only profiles only, else :class:`LimitsError`): reverse segments
    are allowed, under the profile's ``[reverse]`` cap and ramps (their defaults when the
    file has no such table) and treadctl's reverse default cap, with the belt forward."""
    if rear_facing:
        refusal = rear_facing_refusal(profile)
        if refusal is not None:
            raise LimitsError(refusal)
    rev = profile.reverse
    reverse_allowed = profile.supports_reverse or rear_facing
    # A profile without reverse still gets well-defined reverse fields (nothing will use
    # them: reverse_allowed is False), kept inside the forward envelope.
    base = EffectiveLimits(
        max_speed_kmh=profile.speed.max_kmh,
        min_speed_kmh=profile.speed.min_kmh,
        reverse_max_speed_kmh=min(rev.max_speed_kmh, profile.speed.max_kmh),
        accel_mps2=profile.motion.accel_mps2,
        decel_mps2=profile.motion.decel_mps2,
        reverse_accel_mps2=min(rev.accel_mps2, profile.motion.accel_mps2),
        reverse_decel_mps2=min(rev.decel_mps2, profile.motion.decel_mps2),
        min_incline_pct=profile.incline.min_pct,
        max_incline_pct=profile.incline.max_pct,
        # Reverse inclines stay inside what the incline motor can do at all.
        reverse_min_incline_pct=max(rev.min_incline_pct, profile.incline.min_pct),
        reverse_max_incline_pct=min(rev.max_incline_pct, profile.incline.max_pct),
        incline_rate_pct_per_s=profile.incline.rate_pct_per_s,
        max_hr_bpm=DEFAULT_MAX_HR_BPM,
        max_duration_s=DEFAULT_MAX_DURATION_S,
        speed_increment_kmh=profile.speed.increment_kmh,
        incline_increment_pct=profile.incline.increment_pct,
        reverse_allowed=reverse_allowed,
        standstill_dwell_s=rev.standstill_dwell_s,
        rear_facing=rear_facing,
    )
    return base.tightened(Limits(reverse_max_speed_kmh=DEFAULT_REVERSE_MAX_SPEED_KMH))


def effective_limits(
    profile: FirmwareProfile,
    site: Limits | None = None,
    program: Limits | None = None,
    *,
    rear_facing: bool = False,
) -> EffectiveLimits:
    """The limits in force: profile ∩ treadctl defaults ∩ site ∩ program, tightest wins.

    Never raises for the layers. When together they leave no valid setpoint (e.g. a site
    minimum speed above a program's maximum) the result's
    :meth:`EffectiveLimits.contradictions` says so and
    :func:`treadctl.programs.validate.validate_program` reports it. ``rear_facing`` on a
    profile that can reverse is a :class:`LimitsError` (:func:`rear_facing_refusal`).
    """
    return profile_limits(profile, rear_facing=rear_facing).tightened(site).tightened(program)


@dataclass(frozen=True)
class LoosenedField:
    """A layer's value that is looser than what the layers under it already enforce."""

    layer: str  # "site" or "program"
    field: str
    value: float
    effective: float

    def __str__(self) -> str:
        unit = unit_of(self.field)
        kind = "above" if FIELD_BOUNDS[self.field] == "max" else "below"
        return (
            f"{self.layer} limits: {self.field} = {self.value:g} {unit} is {kind} the "
            f"{self.effective:g} {unit} already in force and has no effect"
        )


def _loosened(base: EffectiveLimits, layer: Limits | None, name: str) -> list[LoosenedField]:
    if layer is None:
        return []
    out: list[LoosenedField] = []
    for key, value in layer.items():
        current: float = getattr(base, key)
        looser = value > current if FIELD_BOUNDS[key] == "max" else value < current
        if looser:
            out.append(LoosenedField(name, key, value, current))
    return out


def loosened_fields(
    profile: FirmwareProfile, site: Limits | None = None, program: Limits | None = None
) -> list[LoosenedField]:
    """Site and program values that try to loosen the layers under them (and so do nothing).

    Not an error: limits combine by tightest-wins, so such a value simply has no effect;
    validation prints these as warnings so the author notices. The site is compared with
    profile ∩ defaults, the program with profile ∩ defaults ∩ site.
    """
    base = profile_limits(profile)
    out = _loosened(base, site, "site")
    out.extend(_loosened(base.tightened(site), program, "program"))
    return out


def _as_number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LimitsError(f"{where}: {key} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise LimitsError(f"{where}: {key} must be a finite number, got {value!r}")
    return number


def limits_from_dict(d: Mapping[str, Any], where: str) -> Limits:
    """A :class:`Limits` layer from a TOML table or JSON object.

    ``where`` names the source in errors (e.g. ``"site.toml [limits]"``). Unknown keys,
    non-numbers, negative magnitudes, zero rates and a minimum above its maximum are
    :class:`LimitsError` naming the field.
    """
    if not isinstance(d, Mapping):
        raise LimitsError(f"{where}: limits must be a table, got {type(d).__name__}")
    values: dict[str, float] = {}
    for key, raw in d.items():
        if key not in FIELD_BOUNDS:
            known = ", ".join(FIELD_BOUNDS)
            raise LimitsError(f"{where}: unknown field {key!r} (known: {known})")
        number = _as_number(raw, where, key)
        if key in _POSITIVE and number <= 0:
            raise LimitsError(f"{where}: {key} must be > 0, got {number:g}")
        if key not in _SIGNED and number < 0:
            raise LimitsError(f"{where}: {key} must not be negative, got {number:g}")
        values[key] = number
    for low, high in _PAIRS:
        if low in values and high in values and values[low] > values[high]:
            raise LimitsError(
                f"{where}: {low} = {values[low]:g} is above {high} = {values[high]:g}"
            )
    return Limits(**values)
