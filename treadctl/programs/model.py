"""Program model: segments, programs, and reading them from TOML files or JSON objects.

This module owns the program data structure (docs/programs.md) and its parsing. Parsing checks
structure only (known keys, types, finite numbers) and reports every problem at once as a
:class:`ProgramError` carrying :class:`Violation` items with segment number and field;
whether the setpoints are allowed on a given treadmill is :mod:`treadctl.programs.validate`'s
job, because that depends on the firmware profile and site limits.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from treadctl.limits import Limits, LimitsError, limits_from_dict
from treadctl.types import Direction

# Package data (pyproject: "treadctl.programs" = ["builtin/*.toml"]), not a package of its own.
_BUILTIN_DIR = "builtin"


@dataclass(frozen=True)
class Violation:
    """One problem with a program: which segment (1-based, None = whole program) and field."""

    segment: int | None
    field: str
    message: str

    def __str__(self) -> str:
        prefix = f"segment {self.segment}: " if self.segment is not None else ""
        return f"{prefix}{self.field}: {self.message}"


class ProgramError(ValueError):
    """A program that cannot be loaded or run; carries every violation found."""

    def __init__(self, violations: Sequence[Violation], source: str | None = None) -> None:
        self.violations: list[Violation] = list(violations)
        self.source = source
        lines = [str(v) for v in self.violations] or ["invalid program"]
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + line for line in lines))


@dataclass(frozen=True)
class Segment:
    """A stretch of constant setpoints. ``speed_kmh`` is a magnitude; ``direction`` says which
    way the belt runs. Speed 0 is a stand-still segment."""

    duration_s: float
    speed_kmh: float
    direction: Direction
    incline_pct: float = 0.0
    label: str | None = None
    #: Heart-rate-governed segment (docs/heart-rate.md): the zone to hold, and the speed
    #: floor and ceiling the governor moves between (``speed_kmh`` is where it starts).
    hr_zone_bpm: tuple[float, float] | None = None
    min_speed_kmh: float | None = None
    max_speed_kmh: float | None = None

    @property
    def governed(self) -> bool:
        return self.hr_zone_bpm is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "duration_s": self.duration_s,
            "speed_kmh": self.speed_kmh,
            "direction": self.direction.value,
            "incline_pct": self.incline_pct,
        }
        if self.label is not None:
            out["label"] = self.label
        if self.hr_zone_bpm is not None:
            out["hr_zone_bpm"] = list(self.hr_zone_bpm)
        if self.min_speed_kmh is not None:
            out["min_speed_kmh"] = self.min_speed_kmh
        if self.max_speed_kmh is not None:
            out["max_speed_kmh"] = self.max_speed_kmh
        return out


@dataclass(frozen=True)
class Program:
    """A named sequence of segments with optional program-level limits (which only tighten)."""

    name: str
    description: str
    segments: tuple[Segment, ...]
    limits: Limits | None = None
    heartbeat_s: float | None = None  # dead-man heartbeat required at this period when set
    why: str = ""
    source: str = field(default="<dict>", compare=False)

    @property
    def total_duration_s(self) -> float:
        return sum((s.duration_s for s in self.segments), 0.0)

    @property
    def reverse_duration_s(self) -> float:
        return sum(
            (s.duration_s for s in self.segments if s.direction is Direction.REVERSE), 0.0
        )

    @property
    def reverse_share(self) -> float:
        """Fraction (0..1) of the programmed time spent on reverse segments."""
        total = self.total_duration_s
        return self.reverse_duration_s / total if total > 0 else 0.0

    @property
    def uses_reverse(self) -> bool:
        """True when any segment is a reverse segment (needs a reverse-capable profile)."""
        return any(s.direction is Direction.REVERSE for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``segments`` key); :func:`program_from_dict` reads it back."""
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.why:
            out["why"] = self.why
        if self.heartbeat_s is not None:
            out["heartbeat_s"] = self.heartbeat_s
        if self.limits is not None:
            out["limits"] = self.limits.to_dict()
        out["segments"] = [s.to_dict() for s in self.segments]
        return out


_PROGRAM_KEYS = frozenset(
    {"name", "description", "why", "limits", "heartbeat_s", "segment", "segments"}
)
_SEGMENT_KEYS = frozenset({"duration_s", "speed_kmh", "direction", "incline_pct", "label",
                           "hr_zone_bpm", "min_speed_kmh", "max_speed_kmh"})
_GOVERNED_KEYS = ("min_speed_kmh", "max_speed_kmh")


class _Collector:
    """Gathers every structural problem so the author sees all of them in one go."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def add(self, segment: int | None, field_name: str, message: str) -> None:
        self.violations.append(Violation(segment, field_name, message))

    def number(
        self, raw: Mapping[str, Any], key: str, segment: int | None, default: float | None = None
    ) -> float | None:
        if key not in raw:
            if default is None:
                self.add(segment, key, "missing (required)")
            return default
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(segment, key, f"must be a number, got {_type_name(value)}")
            return None
        if not math.isfinite(value):
            self.add(segment, key, f"must be a finite number, got {value!r}")
            return None
        return float(value)

    def text(self, raw: Mapping[str, Any], key: str, required: bool) -> str | None:
        if key not in raw:
            if required:
                self.add(None, key, "missing (required)")
            return None
        value = raw[key]
        if not isinstance(value, str):
            self.add(None, key, f"must be a string, got {_type_name(value)}")
            return None
        return value


def _type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _segment_from_dict(raw: Any, number: int, c: _Collector) -> Segment | None:
    if not isinstance(raw, Mapping):
        c.add(number, "segment", f"must be a table, got {_type_name(raw)}")
        return None
    for key in raw:
        if key not in _SEGMENT_KEYS:
            c.add(number, str(key), f"unknown field (known: {', '.join(sorted(_SEGMENT_KEYS))})")
    before = len(c.violations)
    duration = c.number(raw, "duration_s", number)
    speed = c.number(raw, "speed_kmh", number)
    incline = c.number(raw, "incline_pct", number, default=0.0)
    direction: Direction | None = None
    if "direction" not in raw:
        c.add(number, "direction", 'missing (required): "forward" or "reverse"')
    else:
        value = raw["direction"]
        try:
            direction = Direction(value) if isinstance(value, str) else None
        except ValueError:
            direction = None
        if direction is None:
            c.add(number, "direction", f'must be "forward" or "reverse", got {value!r}')
    label: str | None = None
    if "label" in raw:
        if isinstance(raw["label"], str):
            label = raw["label"]
        else:
            c.add(number, "label", f"must be a string, got {_type_name(raw['label'])}")
    zone = _zone(raw, number, c)
    bounds: dict[str, float | None] = {}
    for key in _GOVERNED_KEYS:
        if key in raw:
            bounds[key] = c.number(raw, key, number)
            if "hr_zone_bpm" not in raw:
                c.add(number, key, "only allowed with hr_zone_bpm (a heart-rate-governed "
                                   "segment)")
        elif "hr_zone_bpm" in raw:
            c.add(number, key, "missing (required with hr_zone_bpm): the speed "
                               f"{'floor' if key.startswith('min') else 'ceiling'} of the "
                               "governed segment")
    if len(c.violations) != before or duration is None or speed is None or direction is None:
        return None
    return Segment(
        duration_s=duration,
        speed_kmh=speed,
        direction=direction,
        incline_pct=incline if incline is not None else 0.0,
        label=label,
        hr_zone_bpm=zone,
        min_speed_kmh=bounds.get("min_speed_kmh"),
        max_speed_kmh=bounds.get("max_speed_kmh"),
    )


def _zone(raw: Mapping[str, Any], number: int, c: _Collector) -> tuple[float, float] | None:
    """``hr_zone_bpm = [LOW, HIGH]``: two finite numbers (their order and range are
    validate's business)."""
    if "hr_zone_bpm" not in raw:
        return None
    value = raw["hr_zone_bpm"]
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)):
        c.add(number, "hr_zone_bpm", f"must be [LOW, HIGH] (two numbers, bpm), got {value!r}")
        return None
    if not all(math.isfinite(v) for v in value):
        c.add(number, "hr_zone_bpm", f"must be finite numbers, got {value!r}")
        return None
    return float(value[0]), float(value[1])


def program_from_dict(d: Any, where: str = "<dict>") -> Program:
    """A :class:`Program` from the TOML table or JSON object of docs/programs.md.

    Segments are the ``[[segment]]`` array (TOML); JSON may call it ``segments``. Unknown
    keys, wrong types and missing fields raise :class:`ProgramError` listing all of them.
    """
    c = _Collector()
    if not isinstance(d, Mapping):
        raise ProgramError([Violation(None, "program", f"must be a table/object, got "
                                      f"{_type_name(d)}")], where)
    for key in d:
        if key not in _PROGRAM_KEYS:
            c.add(None, str(key), f"unknown field (known: {', '.join(sorted(_PROGRAM_KEYS))})")
    name = c.text(d, "name", required=True)
    if name is not None and not name.strip():
        c.add(None, "name", "must not be empty")
    description = c.text(d, "description", required=False) or ""
    why = c.text(d, "why", required=False) or ""
    heartbeat: float | None = None
    if "heartbeat_s" in d:
        heartbeat = c.number(d, "heartbeat_s", None)
        if heartbeat is not None and heartbeat <= 0:
            c.add(None, "heartbeat_s", f"must be > 0 s, got {heartbeat:g}")
    limits: Limits | None = None
    if "limits" in d:
        try:
            limits = limits_from_dict(d["limits"], "limits")
        except LimitsError as exc:
            # "limits: field: message" reads the same as every other violation.
            c.add(None, "limits", str(exc).removeprefix("limits: "))
    if "segment" in d and "segments" in d:
        c.add(None, "segments", 'give either "segment" or "segments", not both')
    raw_segments = d.get("segment", d.get("segments"))
    segments: list[Segment] = []
    if raw_segments is None:
        c.add(None, "segment", "missing (required): at least one [[segment]]")
    elif not isinstance(raw_segments, list):
        c.add(None, "segment", f"must be an array of tables, got {_type_name(raw_segments)}")
    elif not raw_segments:
        c.add(None, "segment", "at least one segment is required")
    else:
        for i, raw in enumerate(raw_segments, start=1):
            seg = _segment_from_dict(raw, i, c)
            if seg is not None:
                segments.append(seg)
    if c.violations:
        raise ProgramError(c.violations, where)
    assert name is not None  # a missing name was recorded above
    return Program(
        name=name,
        description=description,
        segments=tuple(segments),
        limits=limits,
        heartbeat_s=heartbeat,
        why=why,
        source=where,
    )


def program_from_json(text: str | bytes, where: str = "<json>") -> Program:
    """A program from JSON text (an MQTT ``cmd/start`` inline program, a .json file)."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProgramError([Violation(None, "program", f"invalid JSON: {exc}")], where) from None
    return program_from_dict(data, where)


def load_program_file(path: str | os.PathLike[str]) -> Program:
    """A program from a ``.toml`` file, or a ``.json`` file (same structure)."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ProgramError([Violation(None, "file", f"cannot read: {reason}")], where) from None
    except UnicodeDecodeError as exc:
        raise ProgramError([Violation(None, "file", f"not UTF-8 text: {exc}")], where) from None
    if path.suffix.lower() == ".json":
        return program_from_json(text, where)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProgramError([Violation(None, "file", f"invalid TOML: {exc}")], where) from None
    return program_from_dict(data, where)


def _builtin_root() -> Traversable:
    return resources.files("treadctl.programs").joinpath(_BUILTIN_DIR)


def builtin_names() -> list[str]:
    """Names of the built-in programs, sorted."""
    root = _builtin_root()
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in root.iterdir()
        if entry.name.endswith(".toml")
    )


def load_builtin(name: str) -> Program:
    """A built-in program by name; :class:`ProgramError` listing the known ones otherwise."""
    # Check the name against the list first: a remote name must never reach the file system
    # as a path (too long, odd characters) before we know it is one of ours.
    if name not in builtin_names():
        known = ", ".join(builtin_names())
        raise ProgramError(
            [Violation(None, "program", f"unknown built-in program {name!r} (built-in: {known})")]
        )
    where = f"builtin:{name}"
    entry = _builtin_root().joinpath(f"{name}.toml")
    try:
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProgramError([Violation(None, "file", f"invalid TOML: {exc}")], where) from None
    return program_from_dict(data, where)


def list_builtin() -> list[Program]:
    """Every built-in program, sorted by name."""
    return [load_builtin(name) for name in builtin_names()]


def load_program(name_or_path: str | os.PathLike[str]) -> Program:
    """A built-in program by name, or a program file by path (.toml or .json).

    Anything that looks like a path (a separator, a .toml/.json suffix) or names an existing
    file is read as a file; everything else is a built-in name.
    """
    text = os.fspath(name_or_path)
    looks_like_path = (
        os.sep in text
        or "/" in text
        or text.lower().endswith((".toml", ".json"))
        or Path(text).is_file()
    )
    if looks_like_path:
        return load_program_file(text)
    return load_builtin(text)
