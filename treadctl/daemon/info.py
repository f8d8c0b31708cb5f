"""What a lane can do: the retained ``<base>/<id>/info`` message (docs/daemon.md, "Lane
capabilities").

Published once per broker connection, retained, QoS 1, right after ``status online``: the
firmware profile, its protocol, whether the belt can run reverse, whether the lane is set
up rear-facing, and the limits in force for the lane (profile ∩ treadctl defaults ∩
``[site_limits]`` ∩ the lane's own ``limits``; a program may only tighten them), and
whether the lane has a heart-rate strap of its own (``hr`` in its config). It does
not change while the daemon runs, so it is kept out of the often republished ``state``.
A back-end (the dashboard) refuses reverse programs on a lane whose ``reverse_programs`` is
false before it sends anything; the daemon checks every program again anyway.
"""

from __future__ import annotations

import json
from typing import Any

from treadctl.daemon.bridge import COMMANDS, iso_utc
from treadctl.daemon.config import TreadmillConfig
from treadctl.limits import Limits, effective_limits
from treadctl.profiles import FirmwareProfile

#: Bumped when a field changes meaning (new fields may be added without a bump).
INFO_VERSION = 1

_LIMIT_FIELDS = ("min_speed_kmh", "max_speed_kmh", "min_incline_pct", "max_incline_pct",
                 "speed_increment_kmh", "incline_increment_pct", "max_duration_s",
                 "max_hr_bpm")
_REVERSE_FIELDS = ("reverse_max_speed_kmh", "reverse_min_incline_pct",
                   "reverse_max_incline_pct")


def lane_info(tm: TreadmillConfig, profile: FirmwareProfile,
              limits: Limits | None) -> dict[str, Any]:
    """The ``info`` message of one lane (``limits``: site and lane limits merged)."""
    lim = effective_limits(profile, limits)
    can_reverse = bool(lim.reverse_allowed)
    rear_facing = bool(getattr(tm, "rear_facing", False))
    reverse_programs = can_reverse or rear_facing
    strap = getattr(tm, "hr", None)
    out_limits: dict[str, Any] = {name: getattr(lim, name) for name in _LIMIT_FIELDS}
    for name in _REVERSE_FIELDS:
        # A lane that runs no reverse segment has no reverse cap to publish.
        out_limits[name] = getattr(lim, name) if reverse_programs else None
    return {
        "version": INFO_VERSION,
        "id": tm.id,
        "profile": profile.name,
        "description": profile.description,
        "protocol": profile.protocol,
        "can_reverse": can_reverse,
        "rear_facing": rear_facing,
        "reverse_programs": reverse_programs,
        "limits": out_limits,
        # The lane's own heart-rate strap (a session may bring another: cmd/start
        # hr_device). Without one, heart rate comes from the treadmill's HR field, if any.
        "hr_strap": strap is not None,
        "hr_device": strap,
        "commands": list(COMMANDS),
    }


def info_payload(info: dict[str, Any], ts: str | None = None) -> bytes:
    return json.dumps({**info, "ts": ts or iso_utc()}, separators=(",", ":")).encode()


def hass_model(profile: FirmwareProfile) -> str:
    """The Home Assistant device model: the profile and, for native lanes, the protocol."""
    if profile.protocol == "ftms":
        return f"FTMS treadmill ({profile.name})"
    return f"{profile.name} ({profile.protocol} protocol)"
