"""``treadctl programs list|show NAME|validate FILE`` (docs/cli.md, docs/programs.md).

``validate`` prints one line per violation, ``FILE: segment N: field: message``, and exits 2
when there is any (nothing would move); otherwise one ``FILE: OK ...`` line and exit 0.
Site or program limits that try to loosen the layers under them are printed as warnings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from typing import Any

from treadctl.cli import EXIT_OK, EXIT_USAGE, UsageError
from treadctl.limits import Limits, LimitsError, limits_from_dict, rear_facing_refusal, unit_of
from treadctl.profiles import DEFAULT_PROFILE, ProfileError, load_profile
from treadctl.programs.model import Program, ProgramError, Segment, list_builtin, load_program
from treadctl.programs.validate import check_program


def register(sub: Any) -> None:
    p = sub.add_parser("programs", help="training programs: list, show NAME, validate FILE")
    psub = p.add_subparsers(dest="programs_cmd", metavar="ACTION", required=True)

    lst = psub.add_parser("list", help="list the built-in programs")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    lst.set_defaults(func=_list)

    show = psub.add_parser("show", help="show a program's segments and why")
    show.add_argument("name", metavar="NAME", help="built-in name or path to a program file")
    show.add_argument("--json", action="store_true", help="the program as one JSON object")
    show.set_defaults(func=_show)

    val = psub.add_parser(
        "validate", help="check a program against a firmware profile before running it"
    )
    val.add_argument("file", metavar="FILE", help="program file (.toml/.json) or built-in name")
    val.add_argument(
        "--profile", default=DEFAULT_PROFILE,
        help=f"firmware profile name or path (default: {DEFAULT_PROFILE})",
    )
    val.add_argument(
        "--site-limits", metavar="TOML", default=None,
        help="the site layer: a TOML file with a [limits] table, or a daemon config "
        "(its [site_limits] table)",
    )
    val.add_argument(
        "--rear-facing", action="store_true",
        help="check for rear-facing mode (forward-only profiles: reverse segments run with "
        "the belt forward, the user facing the rear; docs/safety.md)",
    )
    val.set_defaults(func=_validate)


def _fmt_duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _summary(program: Program) -> dict[str, Any]:
    return {
        "name": program.name,
        "duration_s": program.total_duration_s,
        "reverse_s": program.reverse_duration_s,
        "reverse_share": round(program.reverse_share, 3),
        "segments": len(program.segments),
        "description": program.description,
    }


def _list(args: argparse.Namespace) -> int:
    try:
        programs = list_builtin()
    except ProgramError as exc:  # a broken built-in is a packaging bug; say which
        raise UsageError(str(exc).replace("\n", "; ")) from None
    if args.json:
        for program in programs:
            print(json.dumps(_summary(program)))
        return EXIT_OK
    width = max((len(p.name) for p in programs), default=4)
    print(f"{'NAME':<{width}}  {'TIME':>5}  {'REV':>4}  DESCRIPTION")
    for p in programs:
        share = f"{p.reverse_share * 100:.0f}%"
        print(f"{p.name:<{width}}  {_fmt_duration(p.total_duration_s):>5}  {share:>4}  "
              f"{p.description}")
    return EXIT_OK


def _load(name: str) -> Program:
    try:
        return load_program(name)
    except ProgramError as exc:
        raise UsageError(str(exc).replace("\n", "; ")) from None


def _show(args: argparse.Namespace) -> int:
    program = _load(args.name)
    if args.json:
        out = program.to_dict()
        out.update({k: v for k, v in _summary(program).items() if k not in out})
        print(json.dumps(out, indent=2))
        return EXIT_OK
    print(f"{program.name}: {program.description}")
    if program.why:
        print(f"why: {program.why}")
    print(f"total {_fmt_duration(program.total_duration_s)}, "
          f"reverse {_fmt_duration(program.reverse_duration_s)} "
          f"({program.reverse_share * 100:.0f}%), {len(program.segments)} segments")
    if program.limits is not None and program.limits.items():
        limits = ", ".join(f"{k} = {v:g} {unit_of(k)}" for k, v in program.limits.items())
        print(f"limits: {limits}")
    if program.heartbeat_s is not None:
        print(f"dead-man heartbeat required every {program.heartbeat_s:g} s")
    print()
    # Heart-rate-governed segments (docs/heart-rate.md): the zone held, and the speed range
    # the governor moves in (KM/H is where it starts). The column only when one is governed.
    governed = any(seg.governed for seg in program.segments)
    zone_head = f"  {'HR ZONE':<22}" if governed else ""
    print(f"{'#':>3}  {'DIRECTION':<9}  {'KM/H':>5}  {'INCL %':>6}  {'TIME':>5}{zone_head}  LABEL")
    for n, seg in enumerate(program.segments, start=1):
        zone = f"  {_zone(seg):<22}" if governed else ""
        print(f"{n:>3}  {seg.direction.value:<9}  {seg.speed_kmh:>5.1f}  "
              f"{seg.incline_pct:>6.1f}  {_fmt_duration(seg.duration_s):>5}{zone}  "
              f"{seg.label or ''}")
    return EXIT_OK


def _zone(seg: Segment) -> str:
    if seg.hr_zone_bpm is None:
        return "-"
    lo, hi = seg.hr_zone_bpm
    text = f"{lo:g}-{hi:g} bpm"
    if seg.min_speed_kmh is not None and seg.max_speed_kmh is not None:
        text += f", {seg.min_speed_kmh:g}-{seg.max_speed_kmh:g} km/h"
    return text


#: Top-level tables that make a TOML file a daemon config (docs/daemon.md).
_DAEMON_TABLES = frozenset({"mqtt", "daemon", "treadmill", "safety", "homeassistant"})


def _site_limits(path: str | None) -> Limits | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    # A site limits file has [limits]; a daemon config has the same layer as [site_limits].
    # Both are read; anything else is refused rather than checked against nothing.
    if "limits" in data and "site_limits" in data:
        raise UsageError(f"{path}: has both [limits] and [site_limits]; which one is the site?")
    if "site_limits" in data:
        key = "site_limits"
    elif "limits" in data:
        key = "limits"
    elif _DAEMON_TABLES & data.keys():
        print(f"{path}: daemon config without a [site_limits] table: no site limits",
              file=sys.stderr)
        return None
    else:
        raise UsageError(
            f"{path}: no [limits] table (a site limits file) or [site_limits] table "
            "(a daemon config)"
        )
    table = data[key]
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [{key}] must be a table")
    try:
        return limits_from_dict(table, f"{path} [{key}]")
    except LimitsError as exc:
        raise UsageError(str(exc)) from None


def _validate(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    if args.rear_facing:
        refusal = rear_facing_refusal(profile)
        if refusal is not None:
            raise UsageError(refusal)
    site = _site_limits(args.site_limits)
    label = args.file
    try:
        program = load_program(args.file)
    except ProgramError as exc:
        for violation in exc.violations:
            print(f"{label}: {violation}")
        return EXIT_USAGE
    result = check_program(program, profile, site, rear_facing=args.rear_facing)
    for loose in result.loosened:
        print(f"{label}: warning: {loose}")
    for warning in result.warnings:
        print(f"{label}: warning: {warning}")
    for violation in result.violations:
        print(f"{label}: {violation}")
    if not result.ok:
        noun = "violation" if len(result.violations) == 1 else "violations"
        print(f"{label}: {len(result.violations)} {noun} against profile {profile.name}; "
              "nothing would move", file=sys.stderr)
        if not args.rear_facing and not profile.supports_reverse and any(
            v.field == "direction" for v in result.violations
        ):
            print(f"{label}: hint: on a forward-only treadmill, --rear-facing checks it for "
                  "rear-facing mode (the belt forward, the user facing the rear; "
                  "docs/safety.md)", file=sys.stderr)
        return EXIT_USAGE
    mode = " in rear-facing mode" if args.rear_facing else ""
    print(f"{label}: OK: {program.name}, {len(program.segments)} segments, "
          f"{_fmt_duration(program.total_duration_s)}, "
          f"{program.reverse_share * 100:.0f}% reverse, valid on profile {profile.name}{mode}")
    return EXIT_OK
