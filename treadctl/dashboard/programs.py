"""Programs for the dashboard: built-ins, uploads, and the check before anything moves.

The check is the CLI's (``treadctl programs validate``, :mod:`treadctl.programs.validate`):
an upload's problems come back as the same ``FILE: segment N: field: message`` lines,
plus the segment and field of each for the page. What a lane can do comes from the
daemon's retained ``info`` (profile, protocol, ``can_reverse``, ``rear_facing``, the lane's
limits), else from the dashboard's own config. A lane that cannot run reverse (and is not
rear-facing) gets its reverse programs refused here, before the command is sent; a lane the
dashboard knows nothing about gets no reverse program at all (docs/dashboard.md).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from treadctl.dashboard.config import DashboardConfig, LaneInfo
from treadctl.programs.model import (
    Program,
    ProgramError,
    Violation,
    list_builtin,
    load_builtin,
    program_from_dict,
    program_from_json,
)
from treadctl.types import Direction

MAX_UPLOAD_BYTES = 256 * 1024


@dataclass
class Checked:
    program: Program | None
    lines: list[str] = field(default_factory=list)  # exactly as the CLI prints them
    violations: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.program is not None and not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "lines": self.lines, "violations": self.violations,
                "warnings": self.warnings,
                "program": self.program.name if self.program is not None else None}


def _v(label: str, v: Violation) -> tuple[str, dict[str, Any]]:
    return f"{label}: {v}", {"segment": v.segment, "field": v.field, "message": v.message}


@lru_cache(maxsize=1)
def builtins() -> list[dict[str, Any]]:
    return [{"name": p.name, "description": p.description, "duration_s": p.total_duration_s,
             "reverse": any(s.direction is Direction.REVERSE for s in p.segments),
             "segments": len(p.segments)} for p in list_builtin()]


def parse_upload(data: bytes, filename: str) -> Checked:
    """An uploaded ``.toml`` (or ``.json``) program, or its violations (CLI wording)."""
    label = filename or "upload.toml"
    if len(data) > MAX_UPLOAD_BYTES:
        line, d = _v(label, Violation(None, "file", f"larger than {MAX_UPLOAD_BYTES} bytes"))
        return Checked(None, [line], [d])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, d = _v(label, Violation(None, "file", f"not UTF-8 text: {exc}"))
        return Checked(None, [line], [d])
    try:
        if label.lower().endswith(".json"):
            program = program_from_json(text, label)
        else:
            try:
                raw = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ProgramError([Violation(None, "file", f"invalid TOML: {exc}")],
                                   label) from None
            program = program_from_dict(raw, label)
    except ProgramError as exc:
        pairs = [_v(label, v) for v in exc.violations]
        return Checked(None, [p[0] for p in pairs], [p[1] for p in pairs])
    return Checked(program)


def lane_from_info(info: dict[str, Any]) -> LaneInfo:
    """What the daemon's retained ``info`` says about a lane, as the check uses it: the
    limits it publishes are already profile ∩ site ∩ lane."""
    from treadctl.limits import FIELD_BOUNDS, Limits

    published = info.get("limits") or {}
    numbers = {k: float(v) for k, v in published.items() if k in FIELD_BOUNDS
               and isinstance(v, int | float) and not isinstance(v, bool)}
    return LaneInfo(str(info["profile"]), Limits(**numbers) if numbers else None,
                    bool(info.get("rear_facing")), info.get("protocol"), "daemon")


def _refuse_reverse(program: Program, label: str, why: str) -> Checked | None:
    pairs = [_v(label, Violation(n, "direction", why))
             for n, s in enumerate(program.segments, start=1)
             if s.direction is Direction.REVERSE]
    return Checked(program, [p[0] for p in pairs], [p[1] for p in pairs]) if pairs else None


def check_on_lane(checked: Checked, label: str, info: LaneInfo | None,
                  config: DashboardConfig) -> Checked:
    """``checked.program`` against the lane's profile, site and lane limits."""
    program = checked.program
    if program is None:
        return checked
    if info is None:
        return _refuse_reverse(program, label, (
            "this lane's firmware profile is unknown to the dashboard; reverse programs are "
            "refused (set it in [dashboard.lanes] or daemon_config)")) or checked
    from treadctl.limits import effective_limits
    from treadctl.profiles import ProfileError, load_profile
    from treadctl.programs.validate import check_program, validate_program

    try:
        profile = load_profile(info.profile)
    except ProfileError:
        # The daemon runs a profile this installation does not ship (a newer daemon): its
        # published limits are all there is. Reverse is refused unless the daemon says the
        # lane can; the daemon checks every limit again before anything moves.
        return _refuse_reverse(program, label, (
            f"firmware profile {info.profile} is unknown to this dashboard; reverse programs "
            "are refused")) or Checked(program, warnings=[
                f"{label}: warning: profile {info.profile} unknown here: the daemon checks "
                "the limits"])
    # rear_facing: reverse segments on a forward-only belt (the user faces the rear), under
    # the reverse cap.
    result = check_program(program, profile, config.site_limits, rear_facing=info.rear_facing)
    violations = list(result.violations)
    if info.limits is not None and not violations:
        lim = effective_limits(profile, config.site_limits, info.limits,
                               rear_facing=info.rear_facing).tightened(program.limits)
        violations = validate_program(program, lim)
    pairs = [_v(label, v) for v in violations]
    warnings = [f"{label}: warning: {w}" for w in (*result.loosened, *result.warnings)]
    return Checked(program, [p[0] for p in pairs], [p[1] for p in pairs], warnings)


def builtin_program(name: str) -> Program | None:
    try:
        return load_builtin(name)
    except ProgramError:
        return None
